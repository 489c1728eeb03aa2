package container

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestValidateHooks(t *testing.T) {
	zero, one := 0, 1
	for _, tc := range []struct {
		h   *specs.Hooks
		err string
	}{
		{nil, ""},
		{&specs.Hooks{Poststop: []specs.Hook{{Path: "/bin/true", Timeout: &one}}}, ""},
		{&specs.Hooks{CreateRuntime: []specs.Hook{{Path: "true"}}}, "hooks.createRuntime[0].path"},
		{&specs.Hooks{Poststart: []specs.Hook{{Path: "/bin/true"}, {Path: "/x", Timeout: &zero}}}, "hooks.poststart[1].timeout"},
	} {
		err := validateHooks(tc.h)
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%+v: %v, want %q", tc.h, err, tc.err)
		}
	}
}

func TestRunHook(t *testing.T) {
	testHostShell(t)
	one := 1
	dir := t.TempDir()
	state := ociState("c1", "/b", StatusCreating, 42, map[string]string{"a": "b"})
	out := filepath.Join(dir, "out")
	if err := runHook(context.Background(), specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", `cat > ` + out + `; echo " $0 $V" >> ` + out}, Env: []string{"V=env"}}, state); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != string(state)+" sh env\n" {
		t.Fatalf("hook saw %q", b)
	}
	err := runHook(context.Background(), specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "echo broken >&2; exit 3"}}, state)
	if err == nil || !strings.Contains(err.Error(), "exit status 3: broken") {
		t.Fatalf("failing hook: %v", err)
	}
	err = runHook(context.Background(), specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "sleep 30"}, Timeout: &one}, state)
	if err == nil || !strings.Contains(err.Error(), "timed out after 1 s") {
		t.Fatalf("slow hook: %v", err)
	}
	if err := runHook(context.Background(), specs.Hook{Path: "/nonexistent"}, state); err == nil {
		t.Fatal("missing hook program: no error")
	}
}

func testHostShell(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh on this host")
	}
}

// recordHook returns a hook that stores its stdin and its mount namespace
// in dir/name.
func recordHook(dir, name string) specs.Hook {
	return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c",
		`cat > ` + filepath.Join(dir, name) + `.json; readlink /proc/self/ns/mnt > ` + filepath.Join(dir, name) + `.mnt`}}
}

func TestHooks(t *testing.T) {
	h := newHarness(t)
	testHostShell(t)
	var warnings []string
	var mu sync.Mutex
	h.rt.opts.Logf = func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		warnings = append(warnings, fmt.Sprintf(f, a...))
	}
	root := makeRootfs(t)
	rec := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	spec := DefaultSpec(root, "sh", "-c", "cat /started; echo ran")
	spec.Annotations = map[string]string{"k": "v"}
	spec.Hooks = &specs.Hooks{
		CreateRuntime:   []specs.Hook{recordHook(rec, "createRuntime")},
		CreateContainer: []specs.Hook{recordHook(rec, "createContainer")},
		// startContainer runs in the container: busybox sh, container paths.
		StartContainer: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > /started"}}},
		Poststart:      []specs.Hook{recordHook(rec, "poststart"), {Path: "/bin/false"}},
		Poststop:       []specs.Hook{recordHook(rec, "poststop")},
	}
	//lint:ignore SA1019 the deprecated prestart hooks are still run
	spec.Hooks.Prestart = []specs.Hook{recordHook(rec, "prestart")}
	exit, out, stderr := h.run(spec)
	var started specs.State
	if exit.Code != 0 || !strings.HasSuffix(out, "ran\n") || json.Unmarshal([]byte(strings.TrimSuffix(out, "ran\n")), &started) != nil {
		t.Fatalf("exit %+v out %q stderr %q", exit, out, stderr)
	}
	hostMnt, _ := os.Readlink("/proc/self/ns/mnt")
	states := map[string]specs.State{"startContainer": started}
	for _, k := range []string{"prestart", "createRuntime", "createContainer", "poststart", "poststop"} {
		b, err := os.ReadFile(filepath.Join(rec, k+".json"))
		if err != nil {
			t.Fatalf("%s hook did not run: %v", k, err)
		}
		var st specs.State
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatalf("%s state %q: %v", k, b, err)
		}
		states[k] = st
		mnt, _ := os.ReadFile(filepath.Join(rec, k+".mnt"))
		if inContainer := strings.TrimSpace(string(mnt)) != hostMnt; inContainer != (k == "createContainer") {
			t.Errorf("%s hook ran in mount namespace %s (host %s)", k, mnt, hostMnt)
		}
	}
	pid := states["createRuntime"].Pid
	for k, want := range map[string]specs.ContainerState{"prestart": "creating", "createRuntime": "creating", "createContainer": "creating",
		"startContainer": "running", "poststart": "running", "poststop": "stopped"} {
		st := states[k]
		if st.Status != want || !strings.HasPrefix(st.ID, "t") || st.Annotations["k"] != "v" || st.Version != specs.Version {
			t.Errorf("%s state %+v, want status %s", k, st, want)
		}
		if k != "poststop" && (st.Pid != pid || pid <= 1) {
			t.Errorf("%s state pid %d, want %d", k, st.Pid, pid)
		}
	}
	mu.Lock()
	if len(warnings) != 1 || !strings.Contains(warnings[0], "poststart hook 1 (/bin/false)") {
		t.Errorf("warnings %q, want one for the failing poststart hook", warnings)
	}
	mu.Unlock()

	// A failing createRuntime, createContainer or startContainer hook fails
	// the container, with the hook's output in the error.
	one := 1
	for _, tc := range []struct {
		name  string
		hooks specs.Hooks
		want  string
		start bool
	}{
		{"createRuntime", specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "echo no way; exit 2"}}}}, "createRuntime hook 0 (/bin/sh): exit status 2: no way", false},
		{"createContainer timeout", specs.Hooks{CreateContainer: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "sleep 30"}, Timeout: &one}}}, "timed out after 1 s", false},
		{"startContainer", specs.Hooks{StartContainer: []specs.Hook{{Path: "/bin/false"}}}, "startContainer hook 0 (/bin/false): exit status 1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := DefaultSpec(root, "true")
			spec.Hooks = &tc.hooks
			id := newID(t)
			err := h.rt.Create(ctx, id, spec, CreateOptions{})
			if tc.start {
				if err != nil {
					t.Fatal(err)
				}
				err = h.rt.Start(ctx, id)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if !tc.start {
				if _, err := os.Stat(filepath.Join(h.rt.root, id)); !os.IsNotExist(err) {
					t.Fatalf("state left after a failed create: %v", err)
				}
			}
		})
	}
}
