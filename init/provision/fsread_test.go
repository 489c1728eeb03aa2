package provision

import (
	"bytes"
	"encoding/binary"
	"os"
	"strings"
	"testing"
)

// fatGeom is the layout of a test FAT image.
type fatGeom struct {
	bps, fatOff, fatBytes, nfats, dataOff, clusterSize int
}

func fatGeometry(b []byte) fatGeom {
	le16 := func(o int) int { return int(binary.LittleEndian.Uint16(b[o:])) }
	bps, spc, rsvd, nfats, rootEnt, fatsz := le16(11), int(b[13]), le16(14), int(b[16]), le16(17), le16(22)
	if fatsz == 0 {
		fatsz = int(binary.LittleEndian.Uint32(b[36:]))
	}
	rootSecs := (rootEnt*32 + bps - 1) / bps
	return fatGeom{bps, rsvd * bps, fatsz * bps, nfats, (rsvd + nfats*fatsz + rootSecs) * bps, bps * spc}
}

// setFAT sets the FAT entry of cluster c in every FAT copy.
func setFAT(b []byte, typ string, c, val uint32) {
	g := fatGeometry(b)
	for i := 0; i < g.nfats; i++ {
		fat := b[g.fatOff+i*g.fatBytes:]
		switch typ {
		case FAT12:
			o := int(c) * 3 / 2
			e := uint32(binary.LittleEndian.Uint16(fat[o:]))
			if c&1 == 1 {
				e = e&0x000F | val<<4
			} else {
				e = e&0xF000 | val&0xFFF
			}
			binary.LittleEndian.PutUint16(fat[o:], uint16(e))
		case FAT16:
			binary.LittleEndian.PutUint16(fat[int(c)*2:], uint16(val))
		default:
			binary.LittleEndian.PutUint32(fat[int(c)*4:], val)
		}
	}
}

// configEntry returns the offset of config.yaml's short directory entry in
// the fixed root directory of a FAT12/16 image (mtools names it CONFIG~1.YAM).
func configEntry(t testing.TB, b []byte) int {
	t.Helper()
	g := fatGeometry(b)
	root := g.fatOff + g.nfats*g.fatBytes
	for o := root; o < g.dataOff; o += 32 {
		if string(b[o:o+11]) == "CONFIG~1YAM" {
			return o
		}
	}
	t.Fatal("no CONFIG~1.YAM entry")
	return 0
}

func readImage(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bigConfig spans several clusters of a 1440 KiB FAT12 image.
var bigConfig = "hostname: a\n" + strings.Repeat("# padding\n", 300)

// hostileFATSeeds are small FAT12 images with broken cluster chains.
func hostileFATSeeds(t testing.TB) [][]byte {
	if _, err := os.Stat("/usr/sbin/mkfs.vfat"); err != nil {
		return nil
	}
	base := readImage(t, vfatImage(t, 64, "12", "CAIRNCONFIG", bigConfig))
	first := uint32(binary.LittleEndian.Uint16(base[configEntry(t, base)+26:]))
	loop := bytes.Clone(base)
	setFAT(loop, FAT12, first, first)
	out := bytes.Clone(base)
	setFAT(out, FAT12, first, 0xFF0)
	return [][]byte{loop, out}
}

func TestReadDriveFileHostileFAT(t *testing.T) {
	requireTool(t, "mkfs.vfat", "mcopy")
	base := readImage(t, vfatImage(t, 1440, "12", "CAIRNCONFIG", bigConfig))
	if got, err := ReadDriveFile(bytes.NewReader(base), int64(len(base)), FAT12); err != nil || string(got) != bigConfig {
		t.Fatalf("intact image: %d bytes, %v", len(got), err)
	}
	ent := configEntry(t, base)
	first := uint32(binary.LittleEndian.Uint16(base[ent+26:]))
	g := fatGeometry(base)
	clusters := uint32((len(base) - g.dataOff) / g.clusterSize)

	tests := []struct {
		name    string
		mutate  func(b []byte) []byte
		wantErr string
	}{
		{"self loop", func(b []byte) []byte { setFAT(b, FAT12, first, first); return b }, "loops at cluster"},
		{"loop back", func(b []byte) []byte { setFAT(b, FAT12, first+1, first); return b }, "loops at cluster"},
		{"chain through every cluster", func(b []byte) []byte {
			// Every cluster links to the next, the last back to 2, and
			// the file claims MaxConfigSize bytes: longer than the volume.
			for c := uint32(2); c < clusters+2; c++ {
				setFAT(b, FAT12, c, c+1)
			}
			setFAT(b, FAT12, clusters+1, 2)
			binary.LittleEndian.PutUint32(b[ent+28:], MaxConfigSize)
			return b
		}, "loops at cluster"},
		{"next cluster out of range", func(b []byte) []byte { setFAT(b, FAT12, first, 0xFF0); return b }, "bad cluster 0xff0"},
		{"first cluster out of range", func(b []byte) []byte {
			binary.LittleEndian.PutUint16(b[ent+26:], 0xFFE)
			return b
		}, "bad cluster 0xffe"},
		{"first cluster zero", func(b []byte) []byte { binary.LittleEndian.PutUint16(b[ent+26:], 0); return b }, "bad cluster 0x0"},
		{"chain ends early", func(b []byte) []byte { setFAT(b, FAT12, first, 0xFFF); return b }, "bad cluster 0xfff"},
		{"file too large", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[ent+28:], MaxConfigSize+1)
			return b
		}, "more than"},
		{"truncated image", func(b []byte) []byte { return b[:len(b)/2] }, "volume claims 1474560 bytes, region has 737280"},
		{"truncated in the data", func(b []byte) []byte {
			// The boot sector claims only what is left; the file's
			// clusters are beyond it.
			n := g.dataOff + g.clusterSize
			binary.LittleEndian.PutUint16(b[19:], uint16(n/g.bps))
			return b[:n]
		}, "bad cluster"},
		{"FAT larger than the device", func(b []byte) []byte {
			binary.LittleEndian.PutUint16(b[22:], 0xFFFF)
			return b
		}, "beyond the volume"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.mutate(bytes.Clone(base))
			got, err := ReadDriveFile(bytes.NewReader(b), int64(len(b)), FAT12)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ReadDriveFile = %d bytes, %v; want error %q", len(got), err, tt.wantErr)
			}
		})
	}
}

// The FAT32 root directory is a cluster chain: a loop in it is refused.
func TestReadDriveFileFAT32RootLoop(t *testing.T) {
	requireTool(t, "mkfs.vfat", "mcopy")
	base := readImage(t, vfatImage(t, 300000, "32", "CAIRNCONFIG", "hostname: c\n"))
	if got, err := ReadDriveFile(bytes.NewReader(base), int64(len(base)), FAT32); err != nil || string(got) != "hostname: c\n" {
		t.Fatalf("intact image: %q, %v", got, err)
	}
	root := binary.LittleEndian.Uint32(base[44:])
	for _, tt := range []struct {
		name    string
		val     uint32
		wantErr string
	}{
		{"self loop", root, "loops at cluster"},
		{"out of range", 0x0FFFFFF0, "bad cluster"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := bytes.Clone(base)
			setFAT(b, FAT32, root, tt.val)
			got, err := ReadDriveFile(bytes.NewReader(b), int64(len(b)), FAT32)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ReadDriveFile = %q, %v; want error %q", got, err, tt.wantErr)
			}
		})
	}
	b := bytes.Clone(base)
	binary.LittleEndian.PutUint32(b[44:], 0x0FFFFFF0)
	if _, err := ReadDriveFile(bytes.NewReader(b), int64(len(b)), FAT32); err == nil || !strings.Contains(err.Error(), "invalid root cluster") {
		t.Fatalf("root cluster out of range: %v", err)
	}
}

func TestReadDriveFileFAT16(t *testing.T) {
	requireTool(t, "mkfs.vfat", "mcopy")
	b := readImage(t, vfatImage(t, 20000, "16", "CAIRNCONFIG", bigConfig))
	if got, err := ReadDriveFile(bytes.NewReader(b), int64(len(b)), FAT16); err != nil || string(got) != bigConfig {
		t.Fatalf("intact image: %d bytes, %v", len(got), err)
	}
	first := uint32(binary.LittleEndian.Uint16(b[configEntry(t, b)+26:]))
	setFAT(b, FAT16, first, first)
	if _, err := ReadDriveFile(bytes.NewReader(b), int64(len(b)), FAT16); err == nil || !strings.Contains(err.Error(), "loops at cluster") {
		t.Fatalf("self loop: %v", err)
	}
}

func TestReadDriveFileHostileISO(t *testing.T) {
	img := isoImage(t, "CAIRN-CONFIG", map[string]string{"config.yaml": "hostname: d\n"})
	full := readImage(t, img)
	base := full[:int(binary.LittleEndian.Uint32(full[16*2048+80:]))*2048]
	if got, err := ReadDriveFile(bytes.NewReader(base), int64(len(base)), ISO9660); err != nil || string(got) != "hostname: d\n" {
		t.Fatalf("intact image: %q, %v", got, err)
	}
	pvd := 16 * 2048
	rootLBA := int(binary.LittleEndian.Uint32(base[pvd+156+2:]))
	// findRec returns the offset of config.yaml's record in the root.
	findRec := func(b []byte) int {
		dir := b[rootLBA*2048:]
		for i := 0; i < 2048 && dir[i] != 0; i += int(dir[i]) {
			if strings.EqualFold(isoName(dir[i:i+int(dir[i])], false), DriveFile) {
				return rootLBA*2048 + i
			}
		}
		t.Fatal("no config.yaml record")
		return 0
	}
	rec := findRec(base)
	tests := []struct {
		name    string
		mutate  func(b []byte) []byte
		wantErr string
	}{
		{"truncated image", func(b []byte) []byte { return b[:len(b)-2048] }, "larger than its device"},
		{"root extent outside", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[pvd+156+2:], 0x7FFFFFFF)
			return b
		}, "outside the device"},
		{"file extent outside", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[rec+2:], uint32(len(b)/2048))
			return b
		}, "outside the device"},
		{"file too large", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[rec+10:], MaxConfigSize+1)
			return b
		}, "more than"},
		{"record length too short", func(b []byte) []byte { b[rec] = 10; return b }, "malformed iso9660 directory record"},
		{"record past the directory", func(b []byte) []byte { b[rec] = 255; b[rec+32] = 250; return b }, "malformed"},
		{"block size", func(b []byte) []byte { binary.LittleEndian.PutUint16(b[pvd+128:], 512); return b }, "logical block size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.mutate(bytes.Clone(base))
			got, err := ReadDriveFile(bytes.NewReader(b), int64(len(b)), ISO9660)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ReadDriveFile = %q, %v; want error %q", got, err, tt.wantErr)
			}
		})
	}
}
