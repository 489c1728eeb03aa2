package ctr

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"cairn.dev/cairn/runtime/container"
	"cairn.dev/cairn/runtime/image"
	"cairn.dev/cairn/runtime/logs"
	"cairn.dev/cairn/runtime/network"
)

const ctrUsage = `usage: cairn-init ctr [global options] COMMAND
  run IMAGE [--name N] [--rm] [-d] [-i] [--net none|host|bridge] [-p [IP:]HOST:CTR[/udp]]
            [-e K=V] [--user U] [--read-only] [--] [CMD...]
  exec [-i] [-e K=V] [--user U] [-w DIR] ID CMD...
                           run CMD in a running container (exit code: CMD's)
  ps                       list containers
  logs [-f] ID             print a container's output
  stop [-t SECONDS] ID     stop signal, then SIGKILL after the grace period (default 10 s)
  rm [-f] ID               remove a stopped (with -f: any) container
global options:
  --root DIR           containers (default /var/lib/cairn/containers)
  --images DIR         image store (default /var/lib/cairn/images)
  --net-state DIR      network leases (default /var/lib/cairn/network)
  --host-netns PATH    network namespace of the bridge (default: this process's)
  --cgroup-parent P    cgroup below the cgroup2 root (default cairn)
`

// Exit codes of "ctr run" for its own failures (as docker run).
const exitSetup = 125

// Main runs "ctr ..." and returns the exit code.
func Main(args []string) int {
	return ctrMain(context.Background(), args, stdio{os.Stdin, os.Stdout, os.Stderr})
}

func ctrMain(ctx context.Context, args []string, io stdio) int {
	o := Options{Root: DefaultContainerRoot, Images: DefaultImageRoot, NetState: DefaultNetworkState, CgroupParent: DefaultCgroupParent}
	fs := newFlagSet("ctr")
	fs.StringVar(&o.Root, "root", o.Root, "")
	fs.StringVar(&o.Images, "images", o.Images, "")
	fs.StringVar(&o.NetState, "net-state", o.NetState, "")
	fs.StringVar(&o.HostNetNS, "host-netns", "", "")
	fs.StringVar(&o.CgroupParent, "cgroup-parent", o.CgroupParent, "")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(io.err, "cairn-init ctr: %v\n%s", err, ctrUsage)
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(io.out, ctrUsage)
		return 0
	}
	var err error
	for _, p := range []*string{&o.Root, &o.Images, &o.NetState} {
		if *p, err = filepath.Abs(*p); err != nil {
			fmt.Fprintf(io.err, "cairn-init ctr: %v\n", err)
			return 1
		}
	}
	cmd, rest := rest[0], rest[1:]
	if cmd == "run" {
		return runCmd(ctx, o, rest, io)
	}
	if cmd == "exec" {
		return execCmd(ctx, o, rest, io)
	}
	if cmd == monitorCmd {
		return monitorMain(ctx, o, rest)
	}
	switch cmd {
	case "ps", "ls":
		err = psCmd(ctx, o, rest, io)
	case "logs":
		err = logsCmd(ctx, o, rest, io)
	case "stop":
		err = stopCmd(ctx, o, rest, io)
	case "rm":
		err = rmCmd(ctx, o, rest, io)
	default:
		err = fmt.Errorf("unknown command %q\n%s", cmd, ctrUsage)
	}
	if err != nil {
		fmt.Fprintf(io.err, "cairn-init ctr: %v\n", err)
		return 1
	}
	return 0
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// parseRun parses "IMAGE [flags] [--] [CMD...]" (flags may also precede
// IMAGE). It does not touch the system.
func parseRun(args []string) (*Meta, error) {
	m := &Meta{}
	var env, ports multiFlag
	netMode := ""
	fs := newFlagSet("run")
	fs.StringVar(&m.ID, "name", "", "")
	fs.BoolVar(&m.Rm, "rm", false, "")
	fs.BoolVar(&m.Detach, "d", false, "")
	fs.BoolVar(&m.Detach, "detach", false, "")
	fs.BoolVar(&m.Interactive, "i", false, "")
	fs.StringVar(&netMode, "net", "bridge", "")
	fs.StringVar(&netMode, "network", "bridge", "")
	fs.Var(&ports, "p", "")
	fs.Var(&ports, "publish", "")
	fs.Var(&env, "e", "")
	fs.Var(&env, "env", "")
	fs.StringVar(&m.User, "user", "", "")
	fs.StringVar(&m.User, "u", "", "")
	fs.BoolVar(&m.ReadOnly, "read-only", false, "")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return nil, errors.New("run: missing IMAGE")
	}
	m.Image = rest[0]
	if m.Image == "" {
		return nil, errors.New("run: empty IMAGE")
	}
	if err := fs.Parse(rest[1:]); err != nil {
		return nil, err
	}
	m.Cmd = fs.Args()
	mode, err := network.ParseMode(netMode)
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	m.Net = mode
	for _, p := range ports {
		pm, err := ParsePort(p)
		if err != nil {
			return nil, fmt.Errorf("run: %w", err)
		}
		m.Ports = append(m.Ports, pm)
	}
	if len(m.Ports) > 0 && m.Net != network.ModeBridge {
		return nil, fmt.Errorf("run: -p needs --net bridge (not %s)", m.Net)
	}
	for _, e := range env {
		k, _, ok := strings.Cut(e, "=")
		if !ok {
			if v, set := os.LookupEnv(e); set {
				e = e + "=" + v
			} else {
				continue
			}
		}
		if k == "" || strings.ContainsRune(e, 0) {
			return nil, fmt.Errorf("run: invalid environment variable %q", e)
		}
		m.Env = append(m.Env, e)
	}
	if m.ID != "" {
		if err := container.ValidID(m.ID); err != nil {
			return nil, fmt.Errorf("run: --name: %w", err)
		}
	}
	if m.Detach && m.Interactive {
		return nil, errors.New("run: -d and -i cannot be combined")
	}
	return m, nil
}

// ParsePort parses a published port: [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp].
func ParsePort(s string) (network.PortMapping, error) {
	var pm network.PortMapping
	spec, proto, hasProto := strings.Cut(s, "/")
	if hasProto {
		if proto != network.TCP && proto != network.UDP {
			return pm, fmt.Errorf("port %q: protocol must be tcp or udp", s)
		}
		pm.Protocol = proto
	}
	parts := strings.Split(spec, ":")
	if len(parts) == 3 {
		ip, err := netip.ParseAddr(parts[0])
		if err != nil || !ip.Is4() {
			return pm, fmt.Errorf("port %q: invalid host IPv4 address", s)
		}
		pm.HostIP = ip
		parts = parts[1:]
	}
	if len(parts) != 2 {
		return pm, fmt.Errorf("port %q: want [IP:]HOSTPORT:CONTAINERPORT[/PROTO]", s)
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 || p != strconv.FormatUint(n, 10) {
			return pm, fmt.Errorf("port %q: %q is not a port number (1-65535)", s, p)
		}
		if i == 0 {
			pm.HostPort = uint16(n)
		} else {
			pm.ContainerPort = uint16(n)
		}
	}
	return pm, nil
}

func runCmd(ctx context.Context, o Options, args []string, io stdio) int {
	fail := func(err error) int {
		fmt.Fprintf(io.err, "cairn-init ctr: %v\n", err)
		return exitSetup
	}
	m, err := parseRun(args)
	if err != nil {
		return fail(fmt.Errorf("%w\n%s", err, ctrUsage))
	}
	st, err := image.Open(o.Images)
	if err != nil {
		return fail(err)
	}
	img, err := resolveImage(ctx, st, m.Image)
	if err != nil {
		return fail(err)
	}
	m.Digest = img.Digest
	if img.Name != "" {
		m.Image = img.Name
	}
	if m.ID == "" {
		m.ID = randomID()
	}
	m.Opts, m.Created = o, time.Now().UTC()
	if err := os.MkdirAll(o.Root, 0o700); err != nil {
		return fail(err)
	}
	dir := filepath.Join(o.Root, m.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fail(fmt.Errorf("container %s already exists", m.ID))
		}
		return fail(err)
	}
	lock, err := openLock(o.Root, m.ID)
	if err != nil {
		_ = os.RemoveAll(dir)
		return fail(err)
	}
	defer lock.close()
	if ok, err := lock.tryLock(); !ok || err != nil {
		return fail(fmt.Errorf("container %s: lock is held (%v)", m.ID, err))
	}
	if err := writeMeta(o.Root, m); err != nil {
		_ = os.RemoveAll(dir)
		return fail(err)
	}
	if m.Detach {
		if err := startMonitor(o, m, lock); err != nil {
			return fail(err)
		}
		fmt.Fprintln(io.out, m.ID)
		return 0
	}
	rio := runIO{stdout: io.out, stderr: io.err}
	if m.Interactive {
		rio.stdin = io.in
	}
	sigc := make(chan os.Signal, 8)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigc)
	rio.signals = sigc
	exit, err := runContainer(ctx, m, rio)
	if err != nil {
		return fail(err)
	}
	return exit.Code
}

const monitorCmd = "__monitor"

// startMonitor re-executes this binary as the container's monitor
// ("ctr __monitor ID"): a new session, stdio on /dev/null, the container
// lock handed over as fd 3 (so the lock is never free while the container
// runs) and a pipe on fd 4 on which it reports "ok" or the start error.
// The monitor outlives this process (it is reparented to the subreaper or
// init when we exit), holds the container's stdio and log, reaps it and
// records its exit status in meta.json.
func startMonitor(o Options, m *Meta, lock *ctrLock) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe", "ctr", "--root", o.Root, monitorCmd, m.ID)
	cmd.Args[0] = os.Args[0]
	cmd.ExtraFiles = []*os.File{lock.f, w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		w.Close()
		_ = removeDir(filepath.Join(o.Root, m.ID))
		return fmt.Errorf("start monitor: %w", err)
	}
	w.Close()
	line, _ := bufio.NewReader(r).ReadString('\n')
	_ = cmd.Process.Release()
	line = strings.TrimSpace(line)
	switch {
	case line == "ok":
		return nil
	case strings.HasPrefix(line, "error: "):
		return errors.New(strings.TrimPrefix(line, "error: "))
	}
	return errors.New("the container monitor exited before the container started")
}

// monitorMain is the -d monitor: it runs the container to the end.
func monitorMain(ctx context.Context, o Options, args []string) int {
	if len(args) != 1 {
		return 2
	}
	lockf := os.NewFile(3, "lock")
	status := os.NewFile(4, "status")
	defer lockf.Close()
	m, err := readMeta(o.Root, args[0])
	if err != nil {
		fmt.Fprintf(status, "error: %v\n", err)
		return 1
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	rio := runIO{started: func(err error) {
		if err != nil {
			fmt.Fprintf(status, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			fmt.Fprintln(status, "ok")
		}
		status.Close()
	}}
	if _, err := runContainer(ctx, m, rio); err != nil {
		return 1
	}
	return 0
}

func randomID() string {
	b := make([]byte, 6)
	f, err := os.Open("/dev/urandom")
	if err == nil {
		_, err = f.Read(b)
		f.Close()
	}
	if err != nil {
		return strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return fmt.Sprintf("%x", b)
}

// status describes a container for ps.
func status(o Options, m *Meta) string {
	l, err := openLock(o.Root, m.ID)
	if err != nil {
		return "unknown"
	}
	defer l.close()
	free, err := l.tryLock()
	switch {
	case err != nil:
		return "unknown"
	case !free:
		return "running"
	case m.Exit != nil && m.Exit.Signal != 0:
		return fmt.Sprintf("exited (%d, signal %d)", m.Exit.Code, m.Exit.Signal)
	case m.Exit != nil && m.Exit.OOMKilled:
		return fmt.Sprintf("exited (%d, OOM killed)", m.Exit.Code)
	case m.Exit != nil:
		return fmt.Sprintf("exited (%d)", m.Exit.Code)
	case m.Error != "":
		return "failed"
	}
	return "dead"
}

func psCmd(ctx context.Context, o Options, args []string, io stdio) error {
	if len(args) != 0 {
		return errors.New("ps: no arguments expected")
	}
	metas, err := listMetas(o.Root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	tw := tabwriter.NewWriter(io.out, 8, 1, 2, ' ', 0)
	fmt.Fprint(tw, "ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS\tIP\tPORTS\n")
	for _, m := range metas {
		ports := make([]string, 0, len(m.Ports))
		for _, p := range m.Ports {
			ports = append(ports, p.String())
		}
		cmd := strings.Join(m.Args, " ")
		if len(cmd) > 30 {
			cmd = cmd[:27] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%q\t%s\t%s\t%s\t%s\n", m.ID, m.Image, cmd, m.Created.Format(time.RFC3339), status(o, m), m.IP, strings.Join(ports, ","))
	}
	return tw.Flush()
}

func logsCmd(ctx context.Context, o Options, args []string, io stdio) error {
	follow := false
	fs := newFlagSet("logs")
	fs.BoolVar(&follow, "f", false, "")
	fs.BoolVar(&follow, "follow", false, "")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	if len(pos) != 1 {
		return errors.New("logs: want exactly one container ID")
	}
	id := pos[0]
	if _, err := readMeta(o.Root, id); err != nil {
		return err
	}
	base := filepath.Join(o.Root, id, "container.log")
	// Rotated files first (oldest is the highest number).
	for i := 9; i >= 1; i-- {
		if _, err := printLog(base+"."+strconv.Itoa(i), 0, io); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	off, err := printLog(base, 0, io)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for follow {
		l, err := openLock(o.Root, id)
		if err != nil {
			return err
		}
		free, _ := l.tryLock()
		l.close()
		time.Sleep(200 * time.Millisecond)
		n, err := printLog(base, off, io)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if n < off { // rotated: start the new file from the top
			n, _ = printLog(base, 0, io)
		}
		off = n
		if free {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// printLog prints the complete lines of a CRI log file from offset off and
// returns the offset after the last complete line.
func printLog(path string, off int64, io stdio) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return off, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() < off {
		return st.Size(), nil
	}
	if _, err := f.Seek(off, 0); err != nil {
		return off, err
	}
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return off, nil // partial last line: next time
		}
		off += int64(len(line))
		e, perr := logs.Parse(line)
		if perr != nil {
			continue
		}
		w := io.out
		if e.Stream == logs.Stderr {
			w = io.err
		}
		_, _ = w.Write(e.Line)
		if !e.Partial {
			_, _ = w.Write([]byte{'\n'})
		}
	}
}

func stopCmd(ctx context.Context, o Options, args []string, io stdio) error {
	secs := 10
	fs := newFlagSet("stop")
	fs.IntVar(&secs, "t", secs, "")
	fs.IntVar(&secs, "time", secs, "")
	pos, err := parseInterleaved(fs, args)
	if err != nil || len(pos) != 1 || secs < 0 {
		return fmt.Errorf("stop: usage: stop [-t SECONDS] ID (%v)", err)
	}
	id := pos[0]
	if err := stopContainer(ctx, o, id, time.Duration(secs)*time.Second); err != nil {
		return err
	}
	fmt.Fprintln(io.out, id)
	return nil
}

// stopContainer stops a running container and waits until its monitor
// has finished the teardown; a container that is not running is left as it is.
func stopContainer(ctx context.Context, o Options, id string, grace time.Duration) error {
	if _, err := readMeta(o.Root, id); err != nil {
		return err
	}
	l, err := openLock(o.Root, id)
	if err != nil {
		return err
	}
	defer l.close()
	if free, err := l.tryLock(); err != nil || free {
		return err
	}
	rt, err := container.New(container.Options{Root: o.runtimeRoot()})
	if err != nil {
		return err
	}
	if _, err := rt.Stop(ctx, id, grace); err != nil &&
		!errors.Is(err, container.ErrNotExist) && !errors.Is(err, container.ErrExitUnknown) {
		return err
	}
	return l.lockWait(grace + 30*time.Second)
}

func rmCmd(ctx context.Context, o Options, args []string, io stdio) error {
	force := false
	fs := newFlagSet("rm")
	fs.BoolVar(&force, "f", false, "")
	fs.BoolVar(&force, "force", false, "")
	pos, err := parseInterleaved(fs, args)
	if err != nil || len(pos) == 0 {
		return fmt.Errorf("rm: usage: rm [-f] ID... (%v)", err)
	}
	for _, id := range pos {
		if err := container.ValidID(id); err != nil {
			return err
		}
		m, err := readMeta(o.Root, id)
		if err != nil {
			return err
		}
		l, err := openLock(o.Root, id)
		if err != nil {
			return err
		}
		free, err := l.tryLock()
		if err == nil && !free {
			if !force {
				l.close()
				return fmt.Errorf("container %s is running: stop it first or use rm -f", id)
			}
			l.close()
			if err := stopContainer(ctx, o, id, 0); err != nil {
				return err
			}
			if l, err = openLock(o.Root, id); err == nil {
				err = l.lockWait(30 * time.Second)
			}
		}
		if err != nil {
			return err
		}
		// Clean up after a monitor that died, then remove.
		terr := teardown(ctx, m)
		l.close()
		if terr != nil {
			return terr
		}
		if err := removeDir(filepath.Join(o.Root, id)); err != nil {
			return err
		}
		fmt.Fprintln(io.out, id)
	}
	return nil
}
