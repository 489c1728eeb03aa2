package qemu

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Firmware is an OVMF code image and the matching variable-store template.
type Firmware struct {
	Code string // read-only pflash unit 0
	Vars string // template copied for each VM (pflash unit 1)
}

// firmwareCandidates lists OVMF locations, best first. Code and vars must come
// in matching pairs (the vars template must come from the same build), so they are
// probed as pairs.
func firmwareCandidates() []Firmware {
	return []Firmware{
		{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},                   // Debian 12 (2 MB)
		{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},             // Debian/Ubuntu 4 MB
		{"/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"},         // Fedora
		{"/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"},     // Arch
		{"/usr/share/edk2-ovmf/x64/OVMF_CODE.fd", "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd"}, // older Arch
		{"/usr/share/qemu/edk2-x86_64-code.fd", "/usr/share/qemu/edk2-i386-vars.fd"},       // QEMU upstream install
		{"/usr/share/OVMF/x64/OVMF_CODE.fd", "/usr/share/OVMF/x64/OVMF_VARS.fd"},           // misc
	}
}

// FindFirmware returns the first OVMF code/vars pair present on this host.
// The environment variables CAIRN_OVMF_CODE and CAIRN_OVMF_VARS override it
// (both must be set).
func FindFirmware() (Firmware, error) {
	code, vars := os.Getenv("CAIRN_OVMF_CODE"), os.Getenv("CAIRN_OVMF_VARS")
	if code != "" || vars != "" {
		if code == "" || vars == "" {
			return Firmware{}, errors.New("qemu: set both CAIRN_OVMF_CODE and CAIRN_OVMF_VARS, or neither")
		}
		fw := Firmware{Code: code, Vars: vars}
		if err := fw.check(); err != nil {
			return Firmware{}, err
		}
		return fw, nil
	}
	return findFirmware(firmwareCandidates())
}

func findFirmware(cands []Firmware) (Firmware, error) {
	var tried []string
	for _, fw := range cands {
		if fw.check() == nil {
			return fw, nil
		}
		tried = append(tried, fw.Code)
	}
	return Firmware{}, fmt.Errorf("qemu: no OVMF firmware found (install the Debian package \"ovmf\", "+
		"or set CAIRN_OVMF_CODE and CAIRN_OVMF_VARS); tried %s", strings.Join(tried, ", "))
}

func (fw Firmware) check() error {
	for _, p := range []string{fw.Code, fw.Vars} {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("qemu: OVMF file: %w", err)
		}
		if !st.Mode().IsRegular() || st.Size() == 0 {
			return fmt.Errorf("qemu: OVMF file %s is not a non-empty regular file", p)
		}
	}
	return nil
}

// NewVars copies the firmware's variable-store template to dst (mode 0600),
// replacing dst. Use it to give each VM a fresh NVRAM.
func (fw Firmware) NewVars(dst string) error {
	src, err := os.Open(fw.Vars)
	if err != nil {
		return fmt.Errorf("qemu: open OVMF vars template: %w", err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".vars-*")
	if err != nil {
		return fmt.Errorf("qemu: create OVMF vars copy: %w", err)
	}
	_, err = io.Copy(tmp, src)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("qemu: copy OVMF vars to %s: %w", dst, err)
	}
	return nil
}

// ensureVars creates dst from the template unless it already exists.
func (fw Firmware) ensureVars(dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("qemu: OVMF vars: %w", err)
	}
	return fw.NewVars(dst)
}
