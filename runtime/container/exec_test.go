package container

import (
	"context"
	"errors"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"cairn.dev/cairn/runtime/logs"
)

func TestMergeProcess(t *testing.T) {
	adj := 5
	base := &specs.Process{
		Args: []string{"init"}, Env: []string{"PATH=/bin", "A=1"}, Cwd: "/srv",
		User: specs.User{UID: 1000, GID: 1000}, NoNewPrivileges: true, Terminal: true,
		Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_KILL"}},
	}
	for _, tc := range []struct {
		name string
		p    *specs.Process
		want func(*specs.Process)
		err  string
	}{
		{name: "nil", p: nil, err: "args are required"},
		{name: "no args", p: &specs.Process{}, err: "args are required"},
		{name: "terminal is p's", p: &specs.Process{Args: []string{"sh"}, Terminal: true, ConsoleSize: &specs.Box{Height: 1, Width: 2}},
			want: func(p *specs.Process) {
				p.Args, p.Terminal, p.ConsoleSize = []string{"sh"}, true, &specs.Box{Height: 1, Width: 2}
			}},
		{name: "args only", p: &specs.Process{Args: []string{"id"}}, want: func(p *specs.Process) { p.Args = []string{"id"} }},
		{name: "env cwd user", p: &specs.Process{Args: []string{"x"}, Env: []string{"A=2", "B=3"}, Cwd: "/tmp", User: specs.User{Username: "root"}, OOMScoreAdj: &adj},
			want: func(p *specs.Process) {
				p.Args, p.Env, p.Cwd, p.User, p.OOMScoreAdj = []string{"x"}, []string{"PATH=/bin", "A=2", "B=3"}, "/tmp", specs.User{Username: "root"}, &adj
			}},
		{name: "caps, nnp stays", p: &specs.Process{Args: []string{"x"}, Capabilities: &specs.LinuxCapabilities{}},
			want: func(p *specs.Process) { p.Args, p.Capabilities = []string{"x"}, &specs.LinuxCapabilities{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mergeProcess(base, tc.p)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := *base
			want.Terminal = false
			want.Env = append([]string(nil), base.Env...)
			tc.want(&want)
			if !reflect.DeepEqual(got, &want) {
				t.Fatalf("got %+v\nwant %+v", got, &want)
			}
		})
	}
	if base.Env[1] != "A=1" {
		t.Fatal("mergeProcess modified the base")
	}
}

// execOut runs p in container id and returns its exit status and output.
func execOut(t *testing.T, rt *Runtime, id string, p *specs.Process) (ExitStatus, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lg, err := logs.New(logs.Options{RingLines: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	proc, err := rt.Exec(ctx, id, p, IO{Stdout: lg.Writer(logs.Stdout), Stderr: lg.Writer(logs.Stderr)})
	if err != nil {
		return ExitStatus{}, "", err
	}
	exit, err := proc.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, e := range lg.Tail(0) {
		out.Write(e.Line)
		out.WriteByte('\n')
	}
	return exit, out.String(), nil
}

func TestExec(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	ctx := context.Background()
	spec := DefaultSpec(root, "sh", "-c", `echo ready; exec sleep 100`)
	spec.Process.Env = append(spec.Process.Env, "FROM_SPEC=yes")
	spec.Process.Cwd = "/tmp"
	spec.Process.User.Username = "app"
	spec.Hostname = "box2"
	id, lg := h.start(spec)
	waitOutput(t, lg, "ready")

	for _, tc := range []struct {
		name string
		p    *specs.Process
		code int
		out  string
	}{
		{name: "user env cwd hostname", p: &specs.Process{Args: []string{"sh", "-c", `id -u; echo $FROM_SPEC $EXTRA; pwd; hostname`}, Env: []string{"EXTRA=1"}},
			out: "1000\nyes 1\n/tmp\nbox2\n"},
		{name: "override user and cwd", p: &specs.Process{Args: []string{"sh", "-c", `id -u; pwd`}, User: specs.User{Username: "root"}, Cwd: "/"},
			out: "0\n/\n"},
		{name: "exit code", p: &specs.Process{Args: []string{"sh", "-c", "exit 7"}}, code: 7},
		{name: "pid namespace", p: &specs.Process{Args: []string{"sh", "-c", "cat /proc/1/cmdline; echo"}}, out: "sleep\x00100\x00\n"},
		{name: "capabilities and seccomp", p: &specs.Process{Args: []string{"sh", "-c", `grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status`}},
			out: "CapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n"},
		{name: "root keeps default caps", p: &specs.Process{Args: []string{"sh", "-c", `grep -E '^CapEff:' /proc/self/status`}, User: specs.User{Username: "0"}},
			out: "CapEff:\t00000000a00425fb\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exit, out, err := execOut(t, h.rt, id, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if exit.Code != tc.code || (tc.out != "" && out != tc.out) {
				t.Fatalf("exit %+v out %q, want %d %q", exit, out, tc.code, tc.out)
			}
		})
	}

	// ps in the container sees the init and the exec'd processes only.
	exit, out, err := execOut(t, h.rt, id, &specs.Process{Args: []string{"ps", "-o", "pid,args"}})
	if err != nil || exit.Code != 0 || !strings.Contains(out, "1 sleep 100") || strings.Count(out, "\n") > 4 {
		t.Fatalf("ps: exit %+v err %v out %q", exit, err, out)
	}

	// Two execs at once: the second runs while the first blocks.
	first, err := h.rt.Exec(ctx, id, &specs.Process{Args: []string{"sleep", "100"}}, IO{})
	if err != nil {
		t.Fatal(err)
	}
	exit, out, err = execOut(t, h.rt, id, &specs.Process{Args: []string{"sh", "-c", "ps -o args | grep -c '^sleep 100'"}})
	if err != nil || exit.Code != 0 || out != "2\n" {
		t.Fatalf("second exec: exit %+v err %v out %q", exit, err, out)
	}
	if err := first.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if exit, err := first.Wait(ctx); err != nil || exit.Code != 137 {
		t.Fatalf("killed exec: %+v %v", exit, err)
	}

	// A program that does not exist fails in Exec, not later.
	if _, _, err := execOut(t, h.rt, id, &specs.Process{Args: []string{"no-such-program"}}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("missing program: %v", err)
	}

	// The container stops: its exec'd processes die with its PID namespace,
	// and exec is refused.
	second, err := h.rt.Exec(ctx, id, &specs.Process{Args: []string{"sleep", "100"}}, IO{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.rt.Stop(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if exit, err := second.Wait(wctx); err != nil || exit.Signal != int(syscall.SIGKILL) {
		t.Fatalf("exec after container stop: %+v %v", exit, err)
	}
	if _, _, err := execOut(t, h.rt, id, &specs.Process{Args: []string{"true"}}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("exec into a stopped container: %v", err)
	}
	if _, _, err := execOut(t, h.rt, "missing", &specs.Process{Args: []string{"true"}}); !errors.Is(err, ErrNotExist) {
		t.Fatalf("exec into a missing container: %v", err)
	}
}

func TestMeasureExec(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("CAIRN_MEASURE"))
	if n <= 0 {
		t.Skip("set CAIRN_MEASURE=N to measure")
	}
	h := newHarness(t)
	root := makeRootfs(t)
	ctx := context.Background()
	id, lg := h.start(DefaultSpec(root, "sh", "-c", "echo ready; exec sleep 1000"))
	waitOutput(t, lg, "ready")
	var ds []time.Duration
	for i := 0; i < n+1; i++ {
		t0 := time.Now()
		p, err := h.rt.Exec(ctx, id, &specs.Process{Args: []string{"/bin/true"}}, IO{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			ds = append(ds, time.Since(t0))
		}
	}
	slices.Sort(ds)
	t.Logf("exec busybox true, n=%d: min %v median %v p95 %v max %v", n, ds[0], ds[len(ds)/2], ds[len(ds)*95/100], ds[len(ds)-1])
}
