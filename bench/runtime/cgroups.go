package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"cairn.dev/cairn/runtime/cgroup"
)

// mount is one line of /proc/self/mountinfo.
type mount struct {
	Point   string
	FSType  string
	Options []string // super options
}

// parseMountinfo reads /proc/PID/mountinfo.
func parseMountinfo(r io.Reader) ([]mount, error) {
	var out []mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		line := sc.Text()
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		pf, sf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(sf) < 3 {
			continue
		}
		out = append(out, mount{Point: cgroup.UnescapeMount(pf[4]), FSType: sf[0], Options: strings.Split(sf[2], ",")})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

// cgroupLayout is the host's cgroup setup.
type cgroupLayout struct {
	Mode     string   // "unified", "hybrid", "legacy" or "none"
	V2Mount  string   // cgroup2 mount point ("" if none)
	V1       []string // v1 controllers mounted (name=... hierarchies excluded)
	V1Mounts []string // all v1 mount points
}

// v1Options are super options of a v1 cgroup mount that are not controllers.
var v1Options = map[string]bool{"rw": true, "ro": true, "noprefix": true, "xattr": true, "clone_children": true, "cpuset_v2_mode": true, "favordynmods": true}

func layoutOf(mounts []mount) cgroupLayout {
	var l cgroupLayout
	unifiedAtRoot := false
	for _, m := range mounts {
		switch m.FSType {
		case "cgroup2":
			if l.V2Mount == "" || m.Point == "/sys/fs/cgroup" {
				l.V2Mount = m.Point
			}
			unifiedAtRoot = unifiedAtRoot || m.Point == "/sys/fs/cgroup"
		case "cgroup":
			l.V1Mounts = append(l.V1Mounts, m.Point)
			for _, o := range m.Options {
				if !v1Options[o] && !strings.Contains(o, "=") {
					l.V1 = append(l.V1, o)
				}
			}
		}
	}
	slices.Sort(l.V1)
	switch {
	case unifiedAtRoot && len(l.V1Mounts) == 0:
		l.Mode = "unified"
	case l.V2Mount != "" && len(l.V1Mounts) > 0:
		l.Mode = "hybrid"
	case len(l.V1Mounts) > 0:
		l.Mode = "legacy"
	case l.V2Mount != "":
		l.Mode = "unified"
	default:
		l.Mode = "none"
	}
	return l
}

// hugetlbPlan decides whether moving hugetlb from cgroup2 to a v1
// hierarchy is needed (crun 1.8.1 refuses hybrid hosts whose cgroup2 tree
// has controllers) and possible. v2ctl are the controllers of the cgroup2
// root (its cgroup.controllers).
func hugetlbPlan(l cgroupLayout, v2ctl []string) (move bool, why string) {
	switch {
	case l.Mode != "hybrid":
		return false, "host cgroups are " + l.Mode + ", nothing to change"
	case len(v2ctl) == 0:
		return false, "hybrid cgroups, but cgroup2 (" + l.V2Mount + ") has no controllers: crun accepts that"
	case slices.Equal(v2ctl, []string{"hugetlb"}) && !slices.Contains(l.V1, "hugetlb"):
		return true, "hybrid cgroups with hugetlb on cgroup2 (" + l.V2Mount + "): crun 1.8.1 refuses that"
	default:
		return false, fmt.Sprintf("hybrid cgroups with controllers %v on cgroup2: not fixable by moving hugetlb; crun will likely refuse", v2ctl)
	}
}

// hugetlbMove is an applied hugetlb move, undone by undo.
type hugetlbMove struct {
	dir        string
	createdDir bool
	mounted    bool
}

const hugetlbDir = "/sys/fs/cgroup/hugetlb"

func applyHugetlbMove() (*hugetlbMove, error) {
	mv := &hugetlbMove{dir: hugetlbDir}
	if _, err := os.Stat(hugetlbDir); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(hugetlbDir, 0o755); err != nil {
			return nil, fmt.Errorf("mkdir %s: %w", hugetlbDir, err)
		}
		mv.createdDir = true
	}
	if err := unix.Mount("cgroup", hugetlbDir, "cgroup", 0, "hugetlb"); err != nil {
		_ = mv.undo(0)
		return nil, fmt.Errorf("mount -t cgroup -o hugetlb cgroup %s: %w", hugetlbDir, err)
	}
	mv.mounted = true
	return mv, nil
}

// undo unmounts the v1 hugetlb hierarchy, waits until hugetlb is back on
// cgroup2 (at most wait) and removes the directory if we made it.
//
// The kernel kills an unmounted v1 hierarchy only if it has no child
// cgroups at umount time, and the cgroups crun just removed linger a while
// as dying children; such a hierarchy then stays bound to hugetlb. Mounting
// it again (which reuses it, or waits for a dying one and makes a new one)
// and unmounting it once the children are gone kills it; it is freed, and
// hugetlb returns to cgroup2, after an RCU grace period (lazy RCU: up to
// ~10 s). So undo polls /proc/cgroups and repeats mount+umount while
// waiting.
func (mv *hugetlbMove) undo(wait time.Duration) error {
	var errs []error
	if mv.mounted {
		if err := unix.Unmount(mv.dir, 0); err != nil {
			return fmt.Errorf("umount %s: %w", mv.dir, err)
		}
		mv.mounted = false
	}
	deadline := time.Now().Add(wait)
	next := time.Now().Add(2 * time.Second) // next mount+umount cycle
	for {
		h, err := hugetlbHierarchy()
		if err != nil {
			errs = append(errs, err)
			break
		}
		if h == 0 {
			break
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("hugetlb is still bound to v1 hierarchy %d %v after unmounting it (a cgroup left in it?); mount -t cgroup -o hugetlb cgroup DIR, remove its cgroups, umount DIR", h, wait))
			break
		}
		if time.Now().After(next) {
			if err := unix.Mount("cgroup", mv.dir, "cgroup", 0, "hugetlb"); err != nil {
				errs = append(errs, fmt.Errorf("remount %s to release it: %w", mv.dir, err))
				break
			}
			if err := unix.Unmount(mv.dir, 0); err != nil {
				mv.mounted = true
				errs = append(errs, fmt.Errorf("umount %s: %w", mv.dir, err))
				break
			}
			next = time.Now().Add(12 * time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if mv.createdDir && !mv.mounted {
		if err := os.Remove(mv.dir); err != nil {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", mv.dir, err))
		} else {
			mv.createdDir = false
		}
	}
	return errors.Join(errs...)
}

// hugetlbHierarchy returns the hierarchy id of hugetlb from /proc/cgroups
// (0: cgroup2 or unbound).
func hugetlbHierarchy() (int, error) {
	f, err := os.Open("/proc/cgroups")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseProcCgroups(f, "hugetlb")
}

// parseProcCgroups returns the hierarchy column of controller in a
// /proc/cgroups table ("#subsys_name hierarchy num_cgroups enabled").
func parseProcCgroups(r io.Reader, controller string) (int, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || strings.HasPrefix(f[0], "#") || f[0] != controller {
			continue
		}
		h, err := strconv.Atoi(f[1])
		if err != nil || h < 0 {
			return 0, fmt.Errorf("/proc/cgroups: bad hierarchy %q for %s", f[1], controller)
		}
		return h, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read /proc/cgroups: %w", err)
	}
	return 0, fmt.Errorf("/proc/cgroups: no %s controller", controller)
}

func readLayout() (cgroupLayout, []string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return cgroupLayout{}, nil, err
	}
	defer f.Close()
	mounts, err := parseMountinfo(f)
	if err != nil {
		return cgroupLayout{}, nil, err
	}
	l := layoutOf(mounts)
	var ctl []string
	if l.V2Mount != "" {
		b, err := os.ReadFile(filepath.Join(l.V2Mount, "cgroup.controllers"))
		if err != nil {
			return l, nil, fmt.Errorf("read cgroup2 controllers: %w", err)
		}
		ctl = strings.Fields(string(b))
		slices.Sort(ctl)
	}
	return l, ctl, nil
}

// sweepCgroups removes every cgroup directory, on every cgroup mount, whose
// name starts with prefix (deepest first) and returns the removed paths.
// Runtimes remove their cgroups themselves; this catches what a failed or
// interrupted run left behind.
func sweepCgroups(prefix string) ([]string, error) {
	l, _, err := readLayout()
	if err != nil {
		return nil, err
	}
	roots := slices.Clone(l.V1Mounts)
	if l.V2Mount != "" {
		roots = append(roots, l.V2Mount)
	}
	var found []string
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			if p != root && strings.HasPrefix(d.Name(), prefix) {
				found = append(found, p)
			}
			if strings.Count(strings.TrimPrefix(p, root), "/") >= 6 {
				return filepath.SkipDir
			}
			return nil
		})
	}
	// Deepest first.
	slices.SortFunc(found, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	var errs []error
	var removed []string
	for _, p := range found {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", p, err))
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}
