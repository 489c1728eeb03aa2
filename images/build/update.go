package build

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"cairn.dev/cairn/os/schema"
)

// maxUpdateRootBytes bounds the trusted root.json baked into the image.
const maxUpdateRootBytes = 1 << 20

// updateRoot returns the OS file's update.root (a TUF root.json, the
// update agent's anchor of trust) and its path in the root tree, or nil
// when the OS file has no update section. A relative path is resolved
// against the OS file's directory.
func updateRoot(o *schema.OS) (dst string, data []byte, err error) {
	if o.Update == nil {
		return "", nil, nil
	}
	if o.Update.Root == "" {
		return "", nil, fmt.Errorf("%s: update.root: required: the repository's root.json (metadata/root.json of a `cairn publish` repository)", o.Source)
	}
	p := o.Update.Root
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(o.Source), p)
	}
	st, err := os.Stat(p)
	if err != nil {
		return "", nil, fmt.Errorf("%s: update.root: %w", o.Source, err)
	}
	if st.Size() > maxUpdateRootBytes {
		return "", nil, fmt.Errorf("%s: update.root: %s is %d bytes, limit %d", o.Source, p, st.Size(), maxUpdateRootBytes)
	}
	if data, err = os.ReadFile(p); err != nil {
		return "", nil, fmt.Errorf("%s: update.root: %w", o.Source, err)
	}
	var probe struct {
		Signed struct {
			Type string `json:"_type"`
		} `json:"signed"`
	}
	if err := json.Unmarshal(data, &probe); err != nil || probe.Signed.Type != "root" {
		return "", nil, fmt.Errorf("%s: update.root: %s is not TUF root metadata (signed._type \"root\")", o.Source, p)
	}
	return strings.TrimPrefix(schema.UpdateRootPath, "/"), data, nil
}
