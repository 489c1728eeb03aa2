package container

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// fdConsole is the stage's end of the console socket (process.terminal).
const fdConsole = 6

// consoleFiles returns the ExtraFiles tail that puts sock at fdConsole
// after the stage's three fixed descriptors.
func consoleFiles(sock *os.File) []*os.File {
	if sock == nil {
		return nil
	}
	return []*os.File{sock}
}

// checkTerminal refuses a terminal without a console socket and the
// reverse.
func checkTerminal(p *specs.Process, sock *os.File) error {
	switch {
	case p.Terminal && sock == nil:
		return errors.New("process.terminal needs a console socket (runc's --console-socket)")
	case !p.Terminal && sock != nil:
		return errors.New("a console socket was given but process.terminal is false")
	}
	return nil
}

// setupConsole runs in the stage, inside the container's mount namespace
// (its /dev/pts) while still privileged: it allocates a pty, sends the
// master over the console socket (SCM_RIGHTS, the payload is the pty's
// name, as runc does), and makes the slave the stage's stdio and
// controlling terminal. The stage is a session leader (Setsid).
func setupConsole(p *specs.Process) error {
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("stage: open /dev/ptmx: %w", err)
	}
	defer unix.Close(master)
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		return fmt.Errorf("stage: unlockpt: %w", err)
	}
	n, err := unix.IoctlGetUint32(master, unix.TIOCGPTN)
	if err != nil {
		return fmt.Errorf("stage: ptsname: %w", err)
	}
	name := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	slave, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("stage: open %s: %w", name, err)
	}
	defer unix.Close(slave)
	if err := unix.Fchown(slave, int(p.User.UID), -1); err != nil {
		return fmt.Errorf("stage: chown %s: %w", name, err)
	}
	if cs := p.ConsoleSize; cs != nil {
		ws := &unix.Winsize{Row: uint16(cs.Height), Col: uint16(cs.Width)}
		if err := unix.IoctlSetWinsize(master, unix.TIOCSWINSZ, ws); err != nil {
			return fmt.Errorf("stage: set console size: %w", err)
		}
	}
	if err := unix.Sendmsg(fdConsole, []byte(name), unix.UnixRights(master), nil, 0); err != nil {
		return fmt.Errorf("stage: send pty master over the console socket: %w", err)
	}
	unix.Close(fdConsole)
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(slave, fd, 0); err != nil {
			return fmt.Errorf("stage: dup pty to fd %d: %w", fd, err)
		}
	}
	if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("stage: set controlling terminal: %w", err)
	}
	return nil
}

// RecvConsole receives the pty master the runtime sends over a console
// socket connection (for callers of the Go API; OCI tools use their own).
func RecvConsole(conn *os.File) (*os.File, string, error) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(int(conn.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, "", fmt.Errorf("receive console: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, "", fmt.Errorf("receive console: bad control message (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, "", fmt.Errorf("receive console: want one descriptor (%v)", err)
	}
	name := string(buf[:n])
	return os.NewFile(uintptr(fds[0]), name), name, nil
}
