package provision

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"cairn.dev/cairn/internal/atomicfile"
)

// Files in the store directory: the config exactly as received, and a small
// record of where it came from and its sha256. The record is written last,
// so a power cut between the two leaves a record whose sha256 does not match
// the config; that pair is ignored (and the sources are searched again).
const (
	storedConfig = "machine.yaml"
	storedRecord = "machine.json"
)

// record is machine.json.
type record struct {
	Source Source `json:"source"`
	SHA256 string `json:"sha256"`
}

// Store writes c into the store directory, atomically.
func Store(o Options, c *Config) error {
	o.defaults()
	if err := os.MkdirAll(o.StoreDir, 0o700); err != nil {
		return fmt.Errorf("store config: %w", err)
	}
	rec, err := json.Marshal(record{Source: c.Source, SHA256: c.SHA256})
	if err != nil {
		return fmt.Errorf("store config: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(o.StoreDir, storedConfig), c.Data, 0o600); err != nil {
		return fmt.Errorf("store config: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(o.StoreDir, storedRecord), append(rec, '\n'), 0o600); err != nil {
		return fmt.Errorf("store config: %w", err)
	}
	return atomicfile.SyncDir(o.StoreDir)
}

// ReadStored reads and validates the stored config. It returns nil, nil if
// there is none.
func ReadStored(o Options) (*Config, error) {
	o.defaults()
	path := filepath.Join(o.StoreDir, storedConfig)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stored config: %w", err)
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("stored config %s: more than %d bytes", path, MaxConfigSize)
	}
	recPath := filepath.Join(o.StoreDir, storedRecord)
	rb, err := os.ReadFile(recPath)
	if err != nil {
		return nil, fmt.Errorf("stored config: %w", err)
	}
	var rec record
	if err := json.Unmarshal(rb, &rec); err != nil {
		return nil, fmt.Errorf("stored config %s: %w", recPath, err)
	}
	if got := sum(data); got != rec.SHA256 {
		return nil, fmt.Errorf("stored config %s: sha256 %.12s, but %s records %.12s (interrupted write?)", path, got, recPath, rec.SHA256)
	}
	src := Source{Kind: "stored", Name: path}
	c, err := Validate(o, &Found{Source: src, Data: data})
	if err != nil {
		return nil, fmt.Errorf("stored config (from %s) is no longer valid: %s", rec.Source, oneLine(err))
	}
	c.Source = rec.Source
	return c, nil
}
