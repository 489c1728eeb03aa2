// Package manifest describes what `cairn build` produced: the inputs it used
// (packages, versions) and every artifact with its size and sha256. The
// update publisher reads it to find a version's UKIs and root image.
package manifest

import (
	"encoding/json"
	"fmt"
	"os"
)

// Manifest is written next to the image as <name>.manifest.json.
type Manifest struct {
	Name            string      `json:"name"`
	Version         string      `json:"version"`
	SourceDateEpoch int64       `json:"source_date_epoch"`
	Kernel          string      `json:"kernel_release"`
	Packages        []Package   `json:"packages"`
	Modules         Modules     `json:"modules"`
	Partitions      []Partition `json:"partitions"`
	Verity          Verity      `json:"verity"`
	Slots           []Slot      `json:"slots"`
	Artifacts       []Artifact  `json:"artifacts"`
	Images          []Image     `json:"images,omitempty"`
	Warnings        []string    `json:"warnings,omitempty"`
}

// Package is a Debian package the build used. Fallback is set when the
// pinned version had vanished and the newest of the same flavour was used.
type Package struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	SHA256   string `json:"sha256"`
	Fallback bool   `json:"fallback,omitempty"`
	Pinned   string `json:"pinned_version,omitempty"`
}

// Modules lists the kernel modules in the initramfs and in the root.
type Modules struct {
	Initramfs []string `json:"initramfs"`
	Root      []string `json:"root"`
}

// Partition is one GPT partition of the disk image.
type Partition struct {
	Number   int    `json:"number"`
	Label    string `json:"label"`
	TypeGUID string `json:"type_guid"`
	PartUUID string `json:"partuuid"`
	Offset   int64  `json:"offset"`
	Size     int64  `json:"size"`
}

// Verity describes the dm-verity tree appended to the root image.
type Verity struct {
	RootHash   string `json:"root_hash"`
	Salt       string `json:"salt"`
	DataBlocks uint64 `json:"data_blocks"`
	HashOffset uint64 `json:"hash_offset"`
	BlockSize  int    `json:"block_size"`
	Algorithm  string `json:"algorithm"`
}

// Slot is the UKI built for one root slot.
type Slot struct {
	Slot     string `json:"slot"`
	PartUUID string `json:"partuuid"`
	UKI      string `json:"uki"`
	Cmdline  string `json:"cmdline"`
}

// Image is a container image baked into the root (images/bake): Ref as
// written in the OS file, the manifest Digest, Size of its manifest, config
// and layer blobs, and its flattened tree (relative to
// /usr/share/cairn/images) with the bytes of its regular files.
type Image struct {
	Ref        string `json:"ref"`
	Digest     string `json:"digest"`
	Size       int64  `json:"size"`
	Rootfs     string `json:"rootfs"`
	RootfsSize int64  `json:"rootfs_size"`
}

// Artifact is one file the build wrote into the output directory.
type Artifact struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Write stores m as indented JSON at path.
func (m *Manifest) Write(path string) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return nil
}

// Read loads a manifest written by Write.
func Read(path string) (*Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("parse manifest %s: %w", path, err)
	}
	return &m, nil
}
