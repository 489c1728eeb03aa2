package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/runtime/caps"
	"cairn.dev/cairn/runtime/seccomp"
)

// stageEnv marks a re-executed binary as a container stage.
const stageEnv = "_CAIRN_STAGE"

// File descriptors the parent hands to the stage.
const (
	fdConfig = 3 // read: stageConfig as JSON
	fdStatus = 4 // write: stageMsg lines; closed by exec (CLOEXEC)
	fdFifo   = 5 // O_PATH of the exec fifo
)

// stageConfig is everything the stage needs; the parent resolves and
// compiles it so the stage does little work.
type stageConfig struct {
	Spec     *specs.Spec      `json:"spec"`
	Rootfs   string           `json:"rootfs"`
	Seccomp  *seccomp.Program `json:"seccomp,omitempty"`
	Caps     caps.Set         `json:"caps"`
	LastCap  int              `json:"last_cap"`
	CgroupNS bool             `json:"cgroupns"`
	// JoinNS are namespaces to setns(2) into, by OCI type, on the stage thread.
	JoinNS map[specs.LinuxNamespaceType]string `json:"join_ns,omitempty"`
	// ID and Bundle are for the state hooks read.
	ID     string `json:"id,omitempty"`
	Bundle string `json:"bundle,omitempty"`
	// HookSync: before pivot_root, report {"hooks":true} and wait for the
	// parent's hookAck on the config pipe (see stageHookSync).
	HookSync bool `json:"hook_sync,omitempty"`
	// UserNS: the stage runs in a new user namespace (devices are bind
	// mounts of the host's nodes).
	UserNS bool `json:"userns,omitempty"`

	status  *os.File  // the status pipe
	cfgIn   io.Reader // the rest of the config pipe
	hostPid int       // the stage's PID in the runtime's namespace (from hookAck)
}

type stageMsg struct {
	Ready bool   `json:"ready,omitempty"`
	Hooks bool   `json:"hooks,omitempty"` // waiting for the runtime hooks
	Error string `json:"error,omitempty"`
}

// MaybeStage must be called first in every main (and TestMain) of a binary
// that creates containers. It returns at once unless this process is a
// container stage; a stage never returns (it execs the container process
// or exits with status 1 after reporting the error to the parent).
func MaybeStage() {
	var run func(*os.File) error
	switch os.Getenv(stageEnv) {
	case "1":
		run = stage
	case stageExec:
		run = execStage
	default:
		return
	}
	runtime.LockOSThread() // capabilities, seccomp, cgroupns are per thread: exec from this one
	// Until it drops its privileges the stage holds every capability; keep
	// other processes (in the container's PID namespace, for exec) from
	// reading its memory or /proc/PID/root. execve resets this.
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	status := os.NewFile(fdStatus, "status")
	err := run(status)
	if err == nil {
		err = errors.New("stage returned without exec")
	}
	b, _ := json.Marshal(stageMsg{Error: err.Error()})
	_, _ = status.Write(append(b, '\n'))
	os.Exit(1)
}

func stage(status *os.File) error {
	unix.Umask(0)
	cfgFile := os.NewFile(fdConfig, "config")
	var cfg stageConfig
	dec := json.NewDecoder(cfgFile)
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("stage: read config: %w", err)
	}
	if cfg.HookSync {
		cfg.cfgIn = io.MultiReader(dec.Buffered(), cfgFile)
	} else {
		cfgFile.Close()
	}
	cfg.status = status
	spec := cfg.Spec
	if spec == nil || spec.Process == nil || spec.Linux == nil {
		return errors.New("stage: incomplete spec")
	}
	for typ, p := range cfg.JoinNS {
		if err := joinNS(typ, p); err != nil {
			return err
		}
	}
	if cfg.CgroupNS {
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return fmt.Errorf("stage: unshare cgroup namespace: %w", err)
		}
	}
	if err := prepareRootfs(&cfg); err != nil {
		return err
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("stage: sethostname: %w", err)
		}
	}
	if spec.Domainname != "" {
		if err := unix.Setdomainname([]byte(spec.Domainname)); err != nil {
			return fmt.Errorf("stage: setdomainname: %w", err)
		}
	}
	if err := finishRootfs(spec); err != nil {
		return err
	}
	if spec.Process.Terminal {
		if err := setupConsole(spec.Process); err != nil {
			return err
		}
	}
	return execProcess(&cfg, status, true)
}

func joinNS(typ specs.LinuxNamespaceType, path string) error {
	flag, ok := map[specs.LinuxNamespaceType]int{
		specs.NetworkNamespace: unix.CLONE_NEWNET,
		specs.IPCNamespace:     unix.CLONE_NEWIPC,
		specs.UTSNamespace:     unix.CLONE_NEWUTS,
		specs.CgroupNamespace:  unix.CLONE_NEWCGROUP,
	}[typ]
	if !ok {
		return fmt.Errorf("stage: joining a %s namespace is not supported", typ)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("stage: open %s namespace %s: %w", typ, path, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, flag); err != nil {
		return fmt.Errorf("stage: setns %s %s: %w", typ, path, err)
	}
	return nil
}

// execProcess drops privileges, waits on the exec fifo (if fifo is set) and
// execs. Without the fifo nothing is reported on success: the status pipe
// closes on exec.
func execProcess(cfg *stageConfig, status *os.File, fifo bool) error {
	spec := cfg.Spec
	p := spec.Process
	for _, rl := range p.Rlimits {
		res, ok := rlimitByName[rl.Type]
		if !ok {
			return fmt.Errorf("stage: unknown rlimit %q", rl.Type)
		}
		if err := unix.Prlimit(0, res, &unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}, nil); err != nil {
			return fmt.Errorf("stage: setrlimit %s: %w", rl.Type, err)
		}
	}
	if p.OOMScoreAdj != nil {
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(fmt.Sprint(*p.OOMScoreAdj)), 0); err != nil {
			return fmt.Errorf("stage: oom_score_adj: %w", err)
		}
	}
	// Without no_new_privs seccomp needs CAP_SYS_ADMIN: load it while we
	// still have it (runc does the same).
	if cfg.Seccomp != nil && !p.NoNewPrivileges {
		if err := seccomp.Load(cfg.Seccomp); err != nil {
			return fmt.Errorf("stage: %w", err)
		}
	}
	if err := caps.DropBounding(cfg.Caps.Bounding, cfg.LastCap); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("stage: keepcaps: %w", err)
	}
	u := p.User
	groups := make([]int, 0, len(u.AdditionalGids))
	for _, g := range u.AdditionalGids {
		groups = append(groups, int(g))
	}
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("stage: setgroups: %w", err)
	}
	if err := unix.Setresgid(int(u.GID), int(u.GID), int(u.GID)); err != nil {
		return fmt.Errorf("stage: setgid %d: %w", u.GID, err)
	}
	if err := unix.Setresuid(int(u.UID), int(u.UID), int(u.UID)); err != nil {
		return fmt.Errorf("stage: setuid %d: %w", u.UID, err)
	}
	if err := caps.SetThread(cfg.Caps, cfg.LastCap); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("stage: keepcaps: %w", err)
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if err := unix.Chdir(cwd); err != nil {
		return fmt.Errorf("stage: chdir %s: %w", cwd, err)
	}
	// CVE-2024-21626: a leaked host fd as cwd shows up as "(unreachable)".
	if wd, err := unix.Getwd(); err != nil || !strings.HasPrefix(wd, "/") {
		return fmt.Errorf("stage: cwd %q is outside the container root (%v)", wd, err)
	}
	path, err := lookPath(p.Args[0], p.Env)
	if err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	umask := 0o022
	if u.Umask != nil {
		umask = int(*u.Umask)
	}
	unix.Umask(umask)

	if fifo {
		if err := waitStart(status); err != nil {
			return err
		}
		if err := stageStartHooks(cfg); err != nil {
			return err
		}
	}

	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("stage: no_new_privs: %w", err)
		}
		if cfg.Seccomp != nil {
			if err := seccomp.Load(cfg.Seccomp); err != nil {
				return fmt.Errorf("stage: %w", err)
			}
		}
	}
	// Nothing of ours may leak into the container (status pipe, fifo).
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("stage: close_range: %w", err)
	}
	err = unix.Exec(path, p.Args, p.Env)
	return fmt.Errorf("stage: exec %s: %w", path, err)
}

// waitStart reports ready and blocks until Start opens the exec fifo.
func waitStart(status *os.File) error {
	b, _ := json.Marshal(stageMsg{Ready: true})
	if _, err := status.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("stage: report ready: %w", err)
	}
	fifo, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fdFifo), unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("stage: open exec fifo: %w", err)
	}
	defer unix.Close(fifo)
	if _, err := unix.Write(fifo, []byte{0}); err != nil {
		return fmt.Errorf("stage: write exec fifo: %w", err)
	}
	return nil
}

var rlimitByName = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

// lookPath resolves file in the container's PATH (after pivot_root).
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		if err := isExec(file); err != nil {
			return "", err
		}
		return file, nil
	}
	pathEnv := defaultPath
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if isExec(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("executable %q not found in PATH %q", file, pathEnv)
}

func isExec(p string) error {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return fmt.Errorf("exec %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o111 == 0 {
		return fmt.Errorf("exec %s: not an executable file", p)
	}
	return nil
}
