package provision

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	"cairn.dev/cairn/os/schema"
)

const goodConfig = "hostname: web-7\nfiles:\n  - path: /etc/motd\n    content: hi\n"

// vfatImage makes a FAT image of kib KiB with mkfs.vfat (dosfstools) and
// copies content in as config.yaml with mcopy (mtools).
func vfatImage(t testing.TB, kib int, fat, label, content string) string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "drive.img")
	args := []string{"-C", "-n", label}
	if fat != "" {
		args = append(args, "-F", fat)
	}
	args = append(args, img, fmt.Sprint(kib))
	if out, err := exec.Command("mkfs.vfat", args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.vfat: %v: %s", err, out)
	}
	if content != "" {
		src := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mcopy", "-i", img, src, "::config.yaml").CombinedOutput(); err != nil {
			t.Fatalf("mcopy: %v: %s", err, out)
		}
	}
	return img
}

// isoImage makes an iso9660 image (Rock Ridge) with go-diskfs.
func isoImage(t testing.TB, label string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "drive.iso")
	b, err := file.CreateFromPath(img, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(dir, "ws")
	if err := os.Mkdir(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	fsys, err := iso9660.Create(b, 0, 0, 2048, ws)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		f, err := fsys.OpenFile("/"+name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if err := fsys.Finalize(iso9660.FinalizeOptions{VolumeIdentifier: label, RockRidge: true}); err != nil {
		t.Fatal(err)
	}
	b.Close()
	return img
}

func requireTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s is required (Makefile DEB_PKGS: dosfstools, mtools): %v", n, err)
		}
	}
}

func TestProbe(t *testing.T) {
	requireTool(t, "mkfs.vfat", "mcopy")
	tests := []struct {
		name, img, typ, label string
	}{
		{"fat12", vfatImage(t, 1440, "", "CAIRNCONFIG", ""), FAT12, "CAIRNCONFIG"},
		{"fat16", vfatImage(t, 20000, "", "CAIRNCONFIG", ""), FAT16, "CAIRNCONFIG"},
		{"fat32", vfatImage(t, 300000, "32", "CAIRNCONFIG", ""), FAT32, "CAIRNCONFIG"},
		{"fat no label", vfatImage(t, 1440, "", "NO NAME", ""), FAT12, ""},
		{"iso", isoImage(t, "CAIRN-CONFIG", nil), ISO9660, "CAIRN-CONFIG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := os.Open(tt.img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			typ, label, err := Probe(f)
			if err != nil || typ != tt.typ || label != tt.label {
				t.Fatalf("Probe = %q, %q, %v; want %q, %q", typ, label, err, tt.typ, tt.label)
			}
		})
	}
	for _, junk := range [][]byte{nil, make([]byte, 100), make([]byte, 64<<10), bytes.Repeat([]byte{0xEB, 0x55, 0xAA}, 30000)} {
		typ, label, err := Probe(bytes.NewReader(junk))
		if typ != "" || label != "" || err != nil {
			t.Errorf("Probe(junk %d bytes) = %q, %q, %v; want nothing", len(junk), typ, label, err)
		}
	}
}

// mutatedLabel: the root directory's volume-label entry wins over the boot
// sector's, as blkid does (mlabel changes both; here only the entry).
func TestProbeRootDirLabelWins(t *testing.T) {
	requireTool(t, "mkfs.vfat")
	img := vfatImage(t, 1440, "", "CAIRNCONFIG", "")
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.LastIndex(b, []byte("CAIRNCONFIG"))
	if i < 512 {
		t.Fatalf("no root directory label entry found (at %d)", i)
	}
	copy(b[i:], "OTHERLABEL ")
	typ, label, err := Probe(bytes.NewReader(b))
	if err != nil || typ != FAT12 || label != "OTHERLABEL" {
		t.Fatalf("Probe = %q, %q, %v", typ, label, err)
	}
}

// fakeSys makes a /sys and /dev with one block device per image.
func fakeSys(t *testing.T, devs map[string]string, partNames map[string]string) (sys, dev string) {
	t.Helper()
	root := t.TempDir()
	sys, dev = filepath.Join(root, "sys"), filepath.Join(root, "dev")
	for name, img := range devs {
		d := filepath.Join(sys, "class", "block", name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		ue := "DEVNAME=" + name + "\n"
		if pn := partNames[name]; pn != "" {
			ue += "PARTNAME=" + pn + "\n"
		}
		st, err := os.Stat(img)
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(d, "uevent"), ue)
		mustWrite(t, filepath.Join(d, "size"), fmt.Sprint(st.Size()/512))
		if err := os.MkdirAll(dev, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(img, filepath.Join(dev, name)); err != nil {
			t.Fatal(err)
		}
	}
	return sys, dev
}

func mustWrite(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFromDrive(t *testing.T) {
	requireTool(t, "mkfs.vfat", "mcopy")
	other := vfatImage(t, 1440, "", "DATA", "hostname: wrong\n")
	tests := []struct {
		name      string
		devs      map[string]string
		partNames map[string]string
		want      string // "" = nothing found
		wantErr   string
	}{
		{"fat12", map[string]string{"vda": other, "vdb": vfatImage(t, 1440, "", "CAIRNCONFIG", "hostname: a\n")}, nil, "hostname: a\n", ""},
		{"fat16", map[string]string{"vdb": vfatImage(t, 20000, "", "cairnconfig", "hostname: b\n")}, nil, "hostname: b\n", ""},
		{"fat32", map[string]string{"vdb": vfatImage(t, 300000, "32", "CAIRNCONFIG", "hostname: c\n")}, nil, "hostname: c\n", ""},
		{"iso", map[string]string{"sr0": isoImage(t, "CAIRN-CONFIG", map[string]string{"config.yaml": "hostname: d\n"})}, nil, "hostname: d\n", ""},
		{"gpt partition name", map[string]string{"vdb1": other}, map[string]string{"vdb1": "CAIRN-CONFIG"}, "hostname: wrong\n", ""},
		{"no drive", map[string]string{"vda": other}, nil, "", ""},
		{"loop skipped", map[string]string{"loop0": vfatImage(t, 1440, "", "CAIRNCONFIG", "hostname: a\n")}, nil, "", ""},
		{"labelled but no config.yaml", map[string]string{"vdb": vfatImage(t, 1440, "", "CAIRNCONFIG", "")}, nil, "", "open config.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys, dev := fakeSys(t, tt.devs, tt.partNames)
			o := Options{Sys: sys, Dev: dev}
			o.defaults()
			f, err := fromDrive(context.Background(), &o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.want == "" && f != nil:
				t.Fatalf("found %s, want nothing", f.Source)
			case tt.want != "" && (f == nil || string(f.Data) != tt.want):
				t.Fatalf("found %+v, want %q", f, tt.want)
			case f != nil && !strings.Contains(f.Source.Name, "config drive "+dev):
				t.Fatalf("source %q does not name the device", f.Source)
			}
		})
	}
}

func TestFromFwCfg(t *testing.T) {
	sys := t.TempDir()
	loads := 0
	o := Options{Sys: sys, LoadFwCfg: func(context.Context) error {
		loads++
		mustWrite(t, filepath.Join(sys, "firmware/qemu_fw_cfg/by_name/opt/dev.cairn/config/raw"), "hostname: fw\n")
		return nil
	}}
	o.defaults()
	f, err := fromFwCfg(context.Background(), &o)
	if err != nil || f == nil || string(f.Data) != "hostname: fw\n" || f.Source.Name != "fw_cfg opt/dev.cairn/config" || loads != 1 {
		t.Fatalf("fromFwCfg = %+v, %v (loads %d)", f, err, loads)
	}
	// Tree present without the item: nothing, and no module load.
	sys2 := t.TempDir()
	mustWrite(t, filepath.Join(sys2, "firmware/qemu_fw_cfg/by_name/etc/boot-fail-wait/raw"), "x")
	o2 := Options{Sys: sys2, LoadFwCfg: func(context.Context) error { t.Error("module loaded although the tree is there"); return nil }}
	o2.defaults()
	if f, err := fromFwCfg(context.Background(), &o2); f != nil || err != nil {
		t.Fatalf("fromFwCfg without item = %+v, %v", f, err)
	}
	// Module load fails (not QEMU): an error, nothing found.
	o3 := Options{Sys: t.TempDir(), LoadFwCfg: func(context.Context) error { return errors.New("no such device") }}
	o3.defaults()
	if f, err := fromFwCfg(context.Background(), &o3); f != nil || err == nil {
		t.Fatalf("fromFwCfg with failing module = %+v, %v", f, err)
	}
	// Oversized item.
	sys4 := t.TempDir()
	mustWrite(t, filepath.Join(sys4, "firmware/qemu_fw_cfg/by_name/opt/dev.cairn/config/raw"), strings.Repeat("#", MaxConfigSize+1))
	o4 := Options{Sys: sys4}
	o4.defaults()
	if _, err := fromFwCfg(context.Background(), &o4); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("oversized fw_cfg: %v", err)
	}
}

func online(context.Context) error { return nil }

func TestFromCmdline(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		switch r.URL.Path {
		case "/flaky":
			if n < 3 {
				http.Error(w, "not yet", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprint(w, "hostname: url\n")
		case "/big":
			w.Write(bytes.Repeat([]byte("#"), MaxConfigSize+10))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	tests := []struct {
		name, url string
		online    func(context.Context) error
		want      string
		wantErr   string
		hits      int32
	}{
		{"retries then works", srv.URL + "/flaky", online, "hostname: url\n", "", 3},
		{"gives up", srv.URL + "/missing", online, "", "giving up after 3 attempts", 3},
		{"too big", srv.URL + "/big", online, "", "more than", 3},
		{"not http", "file:///etc/passwd", online, "", "not an http", 0},
		{"offline", srv.URL + "/flaky", func(context.Context) error { return errors.New("no address") }, "", "no address", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits.Store(0)
			o := Options{Args: map[string]string{ArgURL: tt.url}, Online: tt.online, URLAttempts: 3, Backoff: time.Millisecond}
			o.defaults()
			f, err := fromCmdline(context.Background(), &o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			} else if err != nil || f == nil || string(f.Data) != tt.want || f.Source.Kind != "cmdline" {
				t.Fatalf("fromCmdline = %+v, %v", f, err)
			}
			if hits.Load() != tt.hits {
				t.Fatalf("%d requests, want %d", hits.Load(), tt.hits)
			}
		})
	}
	// No cairn.config: nothing, no request.
	o := Options{}
	o.defaults()
	if f, err := fromCmdline(context.Background(), &o); f != nil || err != nil {
		t.Fatalf("no arg: %+v, %v", f, err)
	}
}

func TestFromMetadata(t *testing.T) {
	var hits atomic.Int32
	userData := "hostname: cloud\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token":
			if r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
				http.Error(w, "ttl", http.StatusBadRequest)
				return
			}
			fmt.Fprint(w, "TOKEN")
		case r.Method == http.MethodGet && r.URL.Path == "/latest/user-data":
			if r.Header.Get("X-aws-ec2-metadata-token") != "TOKEN" {
				http.Error(w, "no token", http.StatusUnauthorized)
				return
			}
			fmt.Fprint(w, userData)
		case r.Method == http.MethodGet && r.URL.Path == "/openstack/latest/user_data":
			fmt.Fprint(w, userData)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	tests := []struct {
		name      string
		dmi       map[string]string
		want      string
		wantKind  string
		wantCalls bool
	}{
		{"ec2", map[string]string{"sys_vendor": "Amazon EC2\n"}, userData, "ec2", true},
		{"openstack by product", map[string]string{"sys_vendor": "QEMU", "product_name": "OpenStack Nova\n"}, userData, "openstack", true},
		{"openstack by asset tag", map[string]string{"chassis_asset_tag": "OpenStack Compute"}, userData, "openstack", true},
		{"plain qemu: not contacted", map[string]string{"sys_vendor": "QEMU", "product_name": "Standard PC (Q35 + ICH9, 2009)"}, "", "", false},
		{"no dmi: not contacted", nil, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits.Store(0)
			sys := t.TempDir()
			for k, v := range tt.dmi {
				mustWrite(t, filepath.Join(sys, "class/dmi/id", k), v)
			}
			o := Options{Sys: sys, MetadataURL: srv.URL, Online: online, Backoff: time.Millisecond}
			o.defaults()
			f, err := fromMetadata(context.Background(), &o)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == "" && f != nil || tt.want != "" && (f == nil || string(f.Data) != tt.want || f.Source.Kind != tt.wantKind) {
				t.Fatalf("fromMetadata = %+v", f)
			}
			if (hits.Load() > 0) != tt.wantCalls {
				t.Fatalf("%d requests to the metadata service", hits.Load())
			}
		})
	}
	// No user-data (404): nothing found, no error.
	sys := t.TempDir()
	mustWrite(t, filepath.Join(sys, "class/dmi/id/sys_vendor"), "OpenStack Foundation")
	mustWrite(t, filepath.Join(sys, "class/dmi/id/product_name"), "OpenStack Nova")
	empty := httptest.NewServer(http.NotFoundHandler())
	defer empty.Close()
	o := Options{Sys: sys, MetadataURL: empty.URL, Online: online, Backoff: time.Millisecond}
	o.defaults()
	if f, err := fromMetadata(context.Background(), &o); f != nil || err != nil {
		t.Fatalf("404 user-data: %+v, %v", f, err)
	}
}

// testOptions: fw_cfg as the only source, a store in a temp dir, the real
// parser, and a Check that refuses services named "bad".
func testOptions(t *testing.T, fwcfg string, args map[string]string) (Options, *[]string) {
	t.Helper()
	sys := t.TempDir()
	if fwcfg != "" {
		mustWrite(t, filepath.Join(sys, "firmware/qemu_fw_cfg/by_name/opt/dev.cairn/config/raw"), fwcfg)
	}
	var logs []string
	return Options{
		Sys: sys, Dev: t.TempDir(), Args: args, StoreDir: filepath.Join(t.TempDir(), "config"),
		Parse: schema.ParseMachine,
		Check: func(m *schema.Machine) error {
			if _, ok := m.Services["bad"]; ok {
				return errors.New("service bad refused")
			}
			return nil
		},
		Logf: func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) },
	}, &logs
}

func hasLog(logs []string, sub string) bool {
	for _, l := range logs {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

func TestLoadPolicy(t *testing.T) {
	ctx := context.Background()

	// First boot: found, validated, stored.
	o, logs := testOptions(t, goodConfig, nil)
	c := Load(ctx, o)
	if c == nil || c.Machine.Hostname != "web-7" || c.Source.Kind != "fw_cfg" {
		t.Fatalf("Load = %+v; logs %q", c, *logs)
	}
	stored, err := ReadStored(o)
	if err != nil || stored == nil || stored.SHA256 != c.SHA256 || stored.Source != c.Source || stored.Machine.Hostname != "web-7" {
		t.Fatalf("ReadStored = %+v, %v", stored, err)
	}

	// Later boot, another config in fw_cfg, no replace flag: stored kept.
	raw := filepath.Join(o.Sys, "firmware/qemu_fw_cfg/by_name/opt/dev.cairn/config/raw")
	mustWrite(t, raw, "hostname: other\n")
	*logs = nil
	c = Load(ctx, o)
	if c == nil || c.Machine.Hostname != "web-7" {
		t.Fatalf("Load with stored = %+v", c)
	}
	CheckSources(ctx, o, c)
	if !hasLog(*logs, "fw_cfg opt/dev.cairn/config differs from the stored config; keeping the stored one (boot with cairn.config.replace to replace it)") {
		t.Fatalf("no 'differs' line: %q", *logs)
	}

	// Same config again: "matches".
	mustWrite(t, raw, goodConfig)
	*logs = nil
	CheckSources(ctx, o, c)
	if !hasLog(*logs, "matches the stored config") {
		t.Fatalf("no 'matches' line: %q", *logs)
	}

	// cairn.config.replace: replaced and stored.
	mustWrite(t, raw, "hostname: other\n")
	o.Args = map[string]string{ArgReplace: ""}
	*logs = nil
	c = Load(ctx, o)
	if c == nil || c.Machine.Hostname != "other" || !hasLog(*logs, "replacing the stored config") {
		t.Fatalf("Load with replace = %+v, logs %q", c, *logs)
	}
	if s, _ := ReadStored(o); s == nil || s.Machine.Hostname != "other" {
		t.Fatalf("replace not stored: %+v", s)
	}

	// replace with an invalid config: refused, the stored one kept.
	mustWrite(t, raw, "hostname: x\nservices:\n  bad:\n    image: docker.io/library/nginx:1.27\n")
	*logs = nil
	c = Load(ctx, o)
	if c == nil || c.Machine.Hostname != "other" || !hasLog(*logs, "refused, keeping the stored config") {
		t.Fatalf("invalid replace = %+v, logs %q", c, *logs)
	}
}

func TestLoadRefusesInvalid(t *testing.T) {
	tests := []struct {
		name, config, want string
	}{
		{"bad field", "hostname: a\nnetwork:\n  interfaces:\n    - name: eth0\n      dhcp: maybe\n", "fw_cfg opt/dev.cairn/config:5:"},
		{"unknown field", "hostname: a\nservice:\n  x: {}\n", "fw_cfg opt/dev.cairn/config:2:1"},
		{"bad hostname", "hostname: -bad-\n", "fw_cfg opt/dev.cairn/config:1:"},
		{"syntax", "hostname: [\n", "fw_cfg opt/dev.cairn/config:"},
		{"cloud-config", "#cloud-config\nhostname: a\n", "cloud-init is not supported"},
		{"check fails", "services:\n  bad:\n    image: docker.io/library/nginx:1.27\n", "service bad refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, logs := testOptions(t, tt.config, nil)
			if c := Load(context.Background(), o); c != nil {
				t.Fatalf("accepted %+v", c)
			}
			if !hasLog(*logs, tt.want) || !hasLog(*logs, "refused, booting with the image's config") {
				t.Fatalf("logs %q, want %q", *logs, tt.want)
			}
			if s, err := ReadStored(o); s != nil || err != nil {
				t.Fatalf("an invalid config was stored: %+v, %v", s, err)
			}
		})
	}
}

func TestReadStoredTorn(t *testing.T) {
	o, _ := testOptions(t, goodConfig, nil)
	if c := Load(context.Background(), o); c == nil {
		t.Fatal("not accepted")
	}
	// The config replaced, the record not (a power cut in between).
	mustWrite(t, filepath.Join(o.StoreDir, storedConfig), "hostname: torn\n")
	if s, err := ReadStored(o); s != nil || err == nil || !strings.Contains(err.Error(), "interrupted write") {
		t.Fatalf("torn store = %+v, %v", s, err)
	}
	// A garbage record.
	mustWrite(t, filepath.Join(o.StoreDir, storedRecord), "{")
	if s, err := ReadStored(o); s != nil || err == nil {
		t.Fatalf("garbage record = %+v, %v", s, err)
	}
}

func TestDiscoverOrder(t *testing.T) {
	requireTool(t, "mkfs.vfat", "mcopy")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hostname: url\n") }))
	defer srv.Close()
	drive := vfatImage(t, 1440, "", "CAIRNCONFIG", "hostname: drive\n")
	sys, dev := fakeSys(t, map[string]string{"vdb": drive}, nil)
	mustWrite(t, filepath.Join(sys, "class/dmi/id/sys_vendor"), "Amazon EC2")
	o := Options{Sys: sys, Dev: dev, Online: online, MetadataURL: srv.URL, Args: map[string]string{ArgURL: srv.URL + "/c"}}
	if f := Discover(context.Background(), o); f == nil || f.Source.Kind != "cmdline" {
		t.Fatalf("with URL: %+v", f)
	}
	o.Args = nil
	if f := Discover(context.Background(), o); f == nil || f.Source.Kind != "drive" {
		t.Fatalf("with drive: %+v", f)
	}
	mustWrite(t, filepath.Join(sys, "firmware/qemu_fw_cfg/by_name/opt/dev.cairn/config/raw"), "hostname: fw\n")
	if f := Discover(context.Background(), o); f == nil || f.Source.Kind != "fw_cfg" {
		t.Fatalf("with fw_cfg: %+v", f)
	}
	o2 := Options{Sys: t.TempDir(), Dev: t.TempDir(), Online: online, MetadataURL: srv.URL}
	mustWrite(t, filepath.Join(o2.Sys, "class/dmi/id/sys_vendor"), "Amazon EC2")
	if f := Discover(context.Background(), o2); f == nil || f.Source.Kind != "ec2" {
		t.Fatalf("metadata last: %+v", f)
	}
}

// FuzzProbe feeds hostile bytes to the label readers and the user-space
// file system readers: no panic, no error other than a wrapped one.
func FuzzProbe(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 512))
	if _, err := exec.LookPath("mkfs.vfat"); err == nil {
		b, err := os.ReadFile(vfatImage(f, 64, "", "CAIRNCONFIG", "hostname: a\n"))
		if err == nil {
			f.Add(b)
		}
	}
	iso, err := os.ReadFile(isoImage(f, "CAIRN-CONFIG", map[string]string{"config.yaml": "hostname: a\n"}))
	if err == nil && len(iso) > 16*2048+84 {
		// The image file is 1 MiB; the volume is what the PVD says.
		f.Add(iso[:min(len(iso), int(binary.LittleEndian.Uint32(iso[16*2048+80:]))*2048)])
	}
	for _, h := range hostileFATSeeds(f) {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, label, err := Probe(bytes.NewReader(data))
		if err != nil && typ != "" {
			t.Fatalf("error %v with type %q", err, typ)
		}
		_ = label
		if typ != "" {
			b, err := ReadDriveFile(bytes.NewReader(data), int64(len(data)), typ)
			if err == nil && len(b) > MaxConfigSize {
				t.Fatalf("ReadDriveFile returned %d bytes, more than %d", len(b), MaxConfigSize)
			}
		}
	})
}

func TestFromCmdlineIntegrity(t *testing.T) {
	const body = "hostname: pinned\n"
	sum := sha256.Sum256([]byte(body))
	pin := hex.EncodeToString(sum[:])
	var hits atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, body)
	}))
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/down":
			http.Redirect(w, r, plain.URL+"/config.yaml", http.StatusFound)
		case "/same":
			http.Redirect(w, r, "/config.yaml", http.StatusFound)
		default:
			fmt.Fprint(w, body)
		}
	}))
	defer tlsSrv.Close()
	tests := []struct {
		name, url, sha string // sha "-" = no pin
		client         *http.Client
		wantErr        string
		wantWarn       bool
		hits           int32
	}{
		{"http pinned", plain.URL + "/c", pin, nil, "", false, 1},
		{"http pinned upper case", plain.URL + "/c", strings.ToUpper(pin), nil, "", false, 1},
		{"http unpinned warns", plain.URL + "/c", "-", nil, "", true, 1},
		{"http pin differs", plain.URL + "/c", strings.Repeat("00", 32), nil, "pins 0000", false, 1},
		{"bad pin", plain.URL + "/c", "xyz", nil, "is not a hex sha256", false, 0},
		{"short pin", plain.URL + "/c", "abcd", nil, "is not a hex sha256", false, 0},
		{"https unpinned", tlsSrv.URL + "/c", "-", tlsSrv.Client(), "", false, 1},
		{"https redirect within https", tlsSrv.URL + "/same", "-", tlsSrv.Client(), "", false, 2},
		{"https redirect to http refused", tlsSrv.URL + "/down", "-", tlsSrv.Client(), "leaves https", false, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits.Store(0)
			args := map[string]string{ArgURL: tt.url}
			if tt.sha != "-" {
				args[ArgSHA256] = tt.sha
			}
			var logs []string
			o := Options{Args: args, Online: online, URLAttempts: 3, Backoff: time.Millisecond, HTTP: tt.client,
				Logf: func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }}
			o.defaults()
			f, err := fromCmdline(context.Background(), &o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			} else if err != nil || f == nil || string(f.Data) != body {
				t.Fatalf("fromCmdline = %+v, %v", f, err)
			}
			if got := hasLog(logs, "warning: ") && hasLog(logs, "plain http without "+ArgSHA256); got != tt.wantWarn {
				t.Fatalf("warning logged = %v, want %v (logs %q)", got, tt.wantWarn, logs)
			}
			if hits.Load() != tt.hits {
				t.Fatalf("%d requests, want %d", hits.Load(), tt.hits)
			}
		})
	}
}
