package qemu

import (
	"fmt"
	"io"
	"os"

	"cairn.dev/cairn/images/disk"
	"cairn.dev/cairn/images/esp"
	"cairn.dev/cairn/images/uki"
)

// imageESP reads the ESP of a raw disk image through images/esp.
type imageESP struct {
	r         io.ReaderAt
	off, size int64
}

func (e imageESP) ReadDir(dir string) ([]string, error) {
	ents, err := esp.ListDir(e.r, e.off, e.size, dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, ent := range ents {
		if !ent.IsDir {
			names = append(names, ent.Name)
		}
	}
	return names, nil
}

func (e imageESP) ReadFile(path string) ([]byte, error) {
	return esp.ReadFile(e.r, e.off, e.size, path)
}

// parseUKI takes a UKI PE image apart with images/uki.
func parseUKI(pe []byte) (UKI, error) {
	s, err := uki.Read(pe)
	if err != nil {
		return UKI{}, err
	}
	return UKI{
		Linux:   s.Linux,
		Initrd:  s.Initrd,
		Cmdline: cleanCmdline(s.Cmdline),
		OSRel:   string(s.OSRel),
	}, nil
}

// ReadUKI finds the ESP of the raw disk image and returns the UKI that
// systemd-boot would boot by default (see chooseUKI), taken apart.
func ReadUKI(image string) (UKI, error) {
	f, err := os.Open(image)
	if err != nil {
		return UKI{}, fmt.Errorf("read UKI: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return UKI{}, fmt.Errorf("read UKI: %w", err)
	}
	l, err := disk.ReadLayout(image)
	if err != nil {
		return UKI{}, fmt.Errorf("read UKI from %s: %w", image, err)
	}
	var esp *disk.Partition
	for i, p := range l.Partitions {
		if p.Type == disk.TypeESP {
			esp = &l.Partitions[i]
			break
		}
	}
	if esp == nil || esp.Offset+esp.Size > st.Size() {
		return UKI{}, fmt.Errorf("read UKI from %s: no EFI system partition inside the image", image)
	}
	u, err := chooseUKI(imageESP{r: f, off: esp.Offset, size: esp.Size}, parseUKI)
	if err != nil {
		return UKI{}, fmt.Errorf("read UKI from %s: %w", image, err)
	}
	return u, nil
}
