package ctr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"cairn.dev/cairn/runtime/container"
)

// execCmd runs "ctr exec [-i] [-e K=V] [--user U] [-w DIR] ID CMD...": a new
// process in a running container, in the foreground. Its exit code is the
// process's (125 for exec's own failures, as docker exec); SIGINT, SIGTERM,
// SIGHUP and SIGQUIT are forwarded to it.
func execCmd(ctx context.Context, o Options, args []string, io stdio) int {
	var env multiFlag
	var user, cwd string
	interactive := false
	fs := newFlagSet("exec")
	fs.Var(&env, "e", "")
	fs.Var(&env, "env", "")
	fs.StringVar(&user, "user", "", "")
	fs.StringVar(&user, "u", "", "")
	fs.StringVar(&cwd, "w", "", "")
	fs.StringVar(&cwd, "workdir", "", "")
	fs.BoolVar(&interactive, "i", false, "")
	fs.BoolVar(&interactive, "interactive", false, "")
	fail := func(err error) int {
		fmt.Fprintf(io.err, "cairn-init ctr: exec: %v\n", err)
		return exitSetup
	}
	// Flags come before the ID; everything after it is the command.
	if err := fs.Parse(args); err != nil {
		return fail(err)
	}
	rest := fs.Args()
	if len(rest) < 2 {
		return fail(errors.New("missing container ID or command (usage: exec [-i] [-e K=V] [--user U] [-w DIR] ID CMD [ARG...])"))
	}
	id, argv := rest[0], rest[1:]
	if err := container.ValidID(id); err != nil {
		return fail(err)
	}
	if _, err := readMeta(o.Root, id); err != nil {
		return fail(err)
	}
	rt, err := container.New(container.Options{Root: o.runtimeRoot(), CgroupParent: o.CgroupParent})
	if err != nil {
		return fail(err)
	}
	p := &specs.Process{Args: argv, Env: env, Cwd: cwd, User: specs.User{Username: user}}
	pio := container.IO{Stdout: io.out, Stderr: io.err}
	if interactive {
		pio.Stdin = io.in
	}
	sigc := make(chan os.Signal, 8)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigc)
	proc, err := rt.Exec(ctx, id, p, pio)
	if err != nil {
		return fail(err)
	}
	waitc := make(chan container.ExitStatus, 1)
	go func() {
		exit, _ := proc.Wait(context.Background())
		waitc <- exit
	}()
	for {
		select {
		case s := <-sigc:
			if sig, ok := s.(syscall.Signal); ok {
				_ = proc.Signal(sig)
			}
		case exit := <-waitc:
			return exit.Code
		}
	}
}
