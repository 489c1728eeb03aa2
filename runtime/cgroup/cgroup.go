// Package cgroup manages one cgroup v2 directory per container: creation,
// limits from an OCI LinuxResources, stats, OOM events, kill and removal.
// Every path is relative to a Root (the cgroup2 mount point), so the code
// runs unchanged against a fake directory in tests.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ErrNoCgroup2 means no cgroup2 hierarchy is mounted.
var ErrNoCgroup2 = errors.New("no cgroup2 hierarchy mounted")

// Detect returns the cgroup2 mount point from a mountinfo file
// (/proc/self/mountinfo): /sys/fs/cgroup on unified hosts, the "unified"
// mount on hybrid ones.
func Detect(mountinfo string) (string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", fmt.Errorf("detect cgroup2: %w", err)
	}
	defer f.Close()
	return parseMountinfo(f)
}

func parseMountinfo(f interface{ Read([]byte) (int, error) }) (string, error) {
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	best := ""
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		line := sc.Text()
		sep := strings.Index(line, " - ")
		if sep < 0 {
			continue
		}
		pre, post := strings.Fields(line[:sep]), strings.Fields(line[sep+3:])
		if len(pre) < 5 || len(post) < 1 || post[0] != "cgroup2" {
			continue
		}
		mp := UnescapeMount(pre[4])
		if best == "" || mp == "/sys/fs/cgroup" {
			best = mp
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	if best == "" {
		return "", ErrNoCgroup2
	}
	return best, nil
}

// UnescapeMount undoes mountinfo's octal escapes (\040 for space, ...).
func UnescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Manager is one cgroup: Root is the cgroup2 mount, Path the cgroup below it
// ("cairn/web").
type Manager struct {
	Root string
	Path string
}

// New validates path and returns a Manager.
func New(root, path string) (*Manager, error) {
	clean := filepath.Clean("/" + path)
	if clean == "/" || clean != "/"+strings.Trim(path, "/") {
		return nil, fmt.Errorf("cgroup: invalid path %q", path)
	}
	return &Manager{Root: root, Path: strings.TrimPrefix(clean, "/")}, nil
}

// Dir is the cgroup's directory.
func (m *Manager) Dir() string { return filepath.Join(m.Root, m.Path) }

// Controllers lists the controllers available in the parent of the cgroup
// (what the cgroup itself can enable).
func (m *Manager) Controllers() ([]string, error) {
	return readControllers(filepath.Join(m.Root, "cgroup.controllers"))
}

func readControllers(p string) ([]string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return strings.Fields(string(b)), nil
}

// needed returns the controllers a resources block needs.
func needed(r *specs.LinuxResources) []string {
	if r == nil {
		return nil
	}
	var c []string
	if m := r.Memory; m != nil && (m.Limit != nil || m.Reservation != nil || m.Swap != nil) {
		c = append(c, "memory")
	}
	if p := r.CPU; p != nil && (p.Shares != nil || p.Quota != nil || p.Period != nil || p.Idle != nil) {
		c = append(c, "cpu")
	}
	if p := r.CPU; p != nil && (p.Cpus != "" || p.Mems != "") {
		c = append(c, "cpuset")
	}
	// pids.limit 0 means "not set", as in runc (podman --pids-limit 0 sends it).
	if r.Pids != nil && r.Pids.Limit != nil && *r.Pids.Limit != 0 {
		c = append(c, "pids")
	}
	if b := r.BlockIO; b != nil && (b.Weight != nil || len(b.WeightDevice) > 0 || len(b.ThrottleReadBpsDevice) > 0 ||
		len(b.ThrottleWriteBpsDevice) > 0 || len(b.ThrottleReadIOPSDevice) > 0 || len(b.ThrottleWriteIOPSDevice) > 0) {
		c = append(c, "io")
	}
	for k := range r.Unified {
		if i := strings.IndexByte(k, '.'); i > 0 && k[:i] != "cgroup" && !slices.Contains(c, k[:i]) {
			c = append(c, k[:i])
		}
	}
	slices.Sort(c)
	return c
}

// Create makes the cgroup, enables the controllers the resources need in
// every ancestor's cgroup.subtree_control and writes the limits. It fails
// when a needed controller is not available rather than running a
// container without the limit it asked for.
func (m *Manager) Create(r *specs.LinuxResources) error {
	want := needed(r)
	avail, err := m.Controllers()
	if err != nil {
		return err
	}
	for _, c := range want {
		if !slices.Contains(avail, c) {
			return fmt.Errorf("cgroup: controller %q not available in %s (have %v)", c, m.Root, avail)
		}
	}
	// Enable down the tree: Root/a/b/c needs +ctl in Root, Root/a, Root/a/b.
	parts := strings.Split(m.Path, "/")
	dir := m.Root
	for i, p := range parts {
		if len(want) > 0 {
			if err := enable(dir, want); err != nil {
				return err
			}
		}
		dir = filepath.Join(dir, p)
		if err := os.Mkdir(dir, 0o755); err != nil && !(errors.Is(err, os.ErrExist) && i < len(parts)-1) {
			return fmt.Errorf("cgroup: create %s: %w", dir, err)
		}
	}
	if err := m.Set(r); err != nil {
		_ = os.Remove(m.Dir())
		return err
	}
	return nil
}

func enable(dir string, ctls []string) error {
	p := filepath.Join(dir, "cgroup.subtree_control")
	cur, err := readControllers(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var add []string
	for _, c := range ctls {
		if !slices.Contains(cur, c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := writeFile(p, strings.Join(add, " ")); err != nil {
		return fmt.Errorf("cgroup: enable %v in %s: %w", add, dir, err)
	}
	return nil
}

func writeFile(p, v string) error {
	// O_CREATE is harmless on cgroupfs (the file exists or the open fails)
	// and lets tests use a plain directory.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Files returns the control files and values a resources block maps to.
func Files(r *specs.LinuxResources) (map[string]string, error) {
	f := map[string]string{}
	if r == nil {
		return f, nil
	}
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			f["memory.max"] = limit(*m.Limit)
		}
		if m.Reservation != nil {
			f["memory.low"] = limit(*m.Reservation)
		}
		if m.Swap != nil {
			// OCI swap is memory+swap; v2 wants swap alone.
			switch {
			case *m.Swap < 0:
				f["memory.swap.max"] = "max"
			case m.Limit != nil && *m.Limit > 0 && *m.Swap >= *m.Limit:
				f["memory.swap.max"] = strconv.FormatInt(*m.Swap-*m.Limit, 10)
			case *m.Swap == 0:
				f["memory.swap.max"] = "0"
			default:
				return nil, fmt.Errorf("cgroup: memory swap %d below limit", *m.Swap)
			}
		}
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil && *c.Shares > 0 {
			f["cpu.weight"] = strconv.FormatUint(sharesToWeight(*c.Shares), 10)
		}
		if c.Quota != nil || c.Period != nil {
			period := uint64(100000)
			if c.Period != nil && *c.Period > 0 {
				period = *c.Period
			}
			quota := "max"
			if c.Quota != nil && *c.Quota > 0 {
				quota = strconv.FormatInt(*c.Quota, 10)
			}
			f["cpu.max"] = quota + " " + strconv.FormatUint(period, 10)
		}
		if c.Idle != nil {
			f["cpu.idle"] = strconv.FormatInt(*c.Idle, 10)
		}
		if c.Cpus != "" {
			f["cpuset.cpus"] = c.Cpus
		}
		if c.Mems != "" {
			f["cpuset.mems"] = c.Mems
		}
	}
	if r.Pids != nil && r.Pids.Limit != nil && *r.Pids.Limit != 0 {
		f["pids.max"] = limit(*r.Pids.Limit)
	}
	if b := r.BlockIO; b != nil {
		if b.Weight != nil && *b.Weight > 0 {
			f["io.weight"] = "default " + strconv.FormatUint(blkioToIOWeight(uint64(*b.Weight)), 10)
		}
		var w []string
		for _, d := range b.WeightDevice {
			if d.Weight != nil {
				w = append(w, fmt.Sprintf("%d:%d %d", d.Major, d.Minor, blkioToIOWeight(uint64(*d.Weight))))
			}
		}
		if len(w) > 0 {
			if f["io.weight"] != "" {
				w = append([]string{f["io.weight"]}, w...)
			}
			f["io.weight"] = strings.Join(w, "\n")
		}
		var lines []string
		for _, t := range []struct {
			key  string
			devs []specs.LinuxThrottleDevice
		}{
			{"rbps", b.ThrottleReadBpsDevice}, {"wbps", b.ThrottleWriteBpsDevice},
			{"riops", b.ThrottleReadIOPSDevice}, {"wiops", b.ThrottleWriteIOPSDevice},
		} {
			for _, d := range t.devs {
				lines = append(lines, fmt.Sprintf("%d:%d %s=%d", d.Major, d.Minor, t.key, d.Rate))
			}
		}
		if len(lines) > 0 {
			f["io.max"] = strings.Join(lines, "\n")
		}
	}
	for k, v := range r.Unified {
		if k == "" || strings.ContainsAny(k, "/\x00") || k == "." || k == ".." || strings.HasPrefix(k, "cgroup.") && k != "cgroup.type" {
			return nil, fmt.Errorf("cgroup: unified key %q not allowed", k)
		}
		f[k] = v
	}
	return f, nil
}

func limit(v int64) string {
	if v < 0 {
		return "max"
	}
	return strconv.FormatInt(v, 10)
}

// sharesToWeight converts cgroup v1 cpu.shares [2, 262144] to cpu.weight
// [1, 10000] (the conversion runc and crun use).
func sharesToWeight(s uint64) uint64 {
	s = min(max(s, 2), 262144)
	return 1 + ((s-2)*9999)/262142
}

// blkioToIOWeight converts blkio weight [10, 1000] to io.weight [1, 10000].
func blkioToIOWeight(w uint64) uint64 {
	w = min(max(w, 10), 1000)
	return 1 + (w-10)*9999/990
}

// Set writes the limits of r into the cgroup. io.max and io.weight have one
// device per write.
func (m *Manager) Set(r *specs.LinuxResources) error {
	files, err := Files(r)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(files))
	for k := range files {
		keys = append(keys, k)
	}
	// cpuset.mems and cpuset.cpus before anything that may need them.
	slices.Sort(keys)
	slices.SortStableFunc(keys, func(a, b string) int {
		return boolInt(!strings.HasPrefix(a, "cpuset.")) - boolInt(!strings.HasPrefix(b, "cpuset."))
	})
	for _, k := range keys {
		for _, line := range strings.Split(files[k], "\n") {
			if err := writeFile(filepath.Join(m.Dir(), k), line); err != nil {
				return fmt.Errorf("cgroup: set %s=%q: %w", k, line, err)
			}
		}
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Open returns an O_PATH|O_DIRECTORY fd of the cgroup for CLONE_INTO_CGROUP.
func (m *Manager) Open() (*os.File, error) {
	fd, err := unix.Open(m.Dir(), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroup: open %s: %w", m.Dir(), err)
	}
	return os.NewFile(uintptr(fd), m.Dir()), nil
}

// Kill sends SIGKILL to every process in the cgroup (cgroup.kill, 5.14+).
func (m *Manager) Kill() error {
	if err := writeFile(filepath.Join(m.Dir(), "cgroup.kill"), "1"); err != nil {
		return fmt.Errorf("cgroup: kill %s: %w", m.Dir(), err)
	}
	return nil
}

// Procs lists the PIDs in the cgroup.
func (m *Manager) Procs() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(m.Dir(), "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids, nil
}

// Destroy removes the cgroup, killing what is left in it first. A cgroup
// that is already gone is not an error.
func (m *Manager) Destroy() error {
	dir := m.Dir()
	var err error
	for i := 0; i < 50; i++ {
		err = os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if errors.Is(err, unix.EBUSY) {
			_ = m.Kill()
		}
		time.Sleep(time.Duration(i+1) * time.Millisecond)
	}
	return fmt.Errorf("cgroup: remove %s: %w", dir, err)
}
