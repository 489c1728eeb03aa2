package apt

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Runner runs an apt command. argv[0] is "apt-get" or "apt-cache"; dir is
// the working directory ("" for the current one). It returns standard
// output; a failure's error should include standard error.
type Runner interface {
	Run(ctx context.Context, dir string, argv ...string) ([]byte, error)
}

// ExecRunner runs the real apt tools.
type ExecRunner struct{}

// Run implements Runner with os/exec.
func (ExecRunner) Run(ctx context.Context, dir string, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Record is the part of an apt-cache show record that fetching needs.
type Record struct {
	Package, Version, SHA256, Filename string
}

// Show returns the archive records for name, or for name=version if
// version is set. A missing package or version yields no records.
func Show(ctx context.Context, r Runner, name, version string) ([]Record, error) {
	arg := name
	if version != "" {
		arg += "=" + version
	}
	out, err := r.Run(ctx, "", "apt-cache", "show", "--", arg)
	if err != nil {
		if bytes.Contains(out, []byte("Package:")) {
			return nil, fmt.Errorf("apt-cache show %s: %w", arg, err)
		}
		return nil, nil // "E: No packages found" exits 100
	}
	return parseRecords(out), nil
}

func parseRecords(out []byte) []Record {
	var recs []Record
	var cur Record
	flush := func() {
		if cur.Package != "" {
			recs = append(recs, cur)
		}
		cur = Record{}
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			flush()
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.HasPrefix(line, " ") {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Package":
			cur.Package = v
		case "Version":
			cur.Version = v
		case "SHA256":
			cur.SHA256 = strings.ToLower(v)
		case "Filename":
			cur.Filename = v
		}
	}
	flush()
	return recs
}

// Candidate returns the version apt would install for name ("" if none).
func Candidate(ctx context.Context, r Runner, name string) (string, error) {
	out, err := r.Run(ctx, "", "apt-cache", "policy", "--", name)
	if err != nil {
		return "", fmt.Errorf("apt-cache policy %s: %w", name, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Candidate:"); ok {
			v = strings.TrimSpace(v)
			if v == "(none)" {
				return "", nil
			}
			return v, nil
		}
	}
	return "", nil
}

// Family names a numbered package series, Prefix + <N> + Suffix, such as
// "linux-image-6.1.0-" + N + "-cloud-amd64".
type Family struct {
	Prefix, Suffix string
}

// Match returns N if name belongs to the family.
func (f Family) Match(name string) (int, bool) {
	mid, ok := strings.CutPrefix(name, f.Prefix)
	if !ok {
		return 0, false
	}
	mid, ok = strings.CutSuffix(mid, f.Suffix)
	if !ok || mid == "" || strings.TrimLeft(mid, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(mid)
	return n, err == nil
}

// Newest returns the family member with the highest N known to apt.
func Newest(ctx context.Context, r Runner, f Family) (string, error) {
	re := "^" + regexp.QuoteMeta(f.Prefix) + "[0-9]+" + regexp.QuoteMeta(f.Suffix) + "$"
	out, err := r.Run(ctx, "", "apt-cache", "search", "--names-only", re)
	if err != nil {
		return "", fmt.Errorf("apt-cache search %s: %w", re, err)
	}
	type cand struct {
		name string
		n    int
	}
	var cands []cand
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(line, " ")
		if n, ok := f.Match(name); ok {
			cands = append(cands, cand{name, n})
		}
	}
	if len(cands) == 0 {
		return "", fmt.Errorf("no package %s<N>%s known to apt (run apt-get update?)", f.Prefix, f.Suffix)
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].n > cands[j].n })
	return cands[0].name, nil
}
