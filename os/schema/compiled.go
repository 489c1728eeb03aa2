package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// Where the image builder puts the OS file in the root: RootFile byte for
// byte as given to `cairn build` (for people), and RootCompiled the same OS
// parsed and validated, as JSON (for PID 1 and the update agent, which then
// need no YAML parsing at boot; see MarshalCompiled).
const (
	RootFile     = "/usr/share/cairn/os.yaml"
	RootCompiled = "/usr/share/cairn/os.json"
)

// compiledFormat is the version of the compiled form; a file of another
// version does not load (the caller falls back to the YAML).
const compiledFormat = 1

// compiled is the compiled form of an OS: the format version and every
// exported field of OS, including the fields that validation fills
// (yaml:"-"), such as Service.Ports or Resources.MemoryBytes.
type compiled struct {
	Format int `json:"format"`
	OS     *OS `json:"os"`
}

// MarshalCompiled returns o, which Parse returned, in its compiled form:
// JSON that LoadCompiled turns back into an OS equal in every exported field,
// without parsing or validating YAML again. The OS file positions are not
// kept: an error that OS.Merge finds in the OS file's part then names
// o.Source without a line and column (a machine config's own errors keep
// theirs). The output is deterministic (map keys are sorted).
func (o *OS) MarshalCompiled() ([]byte, error) {
	b, err := json.Marshal(compiled{Format: compiledFormat, OS: o})
	if err != nil {
		return nil, fmt.Errorf("compile OS file %s: %w", o.Source, err)
	}
	return append(b, '\n'), nil
}

// LoadCompiled reads an OS in the compiled form that MarshalCompiled wrote.
// The file is trusted to have been validated when it was written; a field it
// does not know, another format version or trailing data is an error.
func LoadCompiled(path string) (*OS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read compiled OS file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 4*MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read compiled OS file %s: %w", path, err)
	}
	if len(data) > 4*MaxFileSize {
		return nil, fmt.Errorf("compiled OS file %s: larger than %d bytes", path, 4*MaxFileSize)
	}
	return parseCompiled(path, data)
}

func parseCompiled(path string, data []byte) (*OS, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c compiled
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("compiled OS file %s: %w", path, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("compiled OS file %s: data after the JSON value", path)
	}
	if c.Format != compiledFormat {
		return nil, fmt.Errorf("compiled OS file %s: format %d, want %d", path, c.Format, compiledFormat)
	}
	if c.OS == nil {
		return nil, fmt.Errorf("compiled OS file %s: no os", path)
	}
	return c.OS, nil
}

// LoadInstalled loads the OS of the running system: the compiled form at
// compiledPath, or, when that is missing or does not load, the OS file at
// yamlPath, after calling logf with the reason.
func LoadInstalled(compiledPath, yamlPath string, logf func(format string, args ...any)) (*OS, error) {
	o, err := LoadCompiled(compiledPath)
	if err == nil {
		return o, nil
	}
	logf("%v; reading %s instead", err, yamlPath)
	return Load(yamlPath)
}
