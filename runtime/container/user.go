package container

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// PasswdEntry is one line of /etc/passwd.
type PasswdEntry struct {
	Name string
	UID  uint32
	GID  uint32
	Home string
}

// GroupEntry is one line of /etc/group.
type GroupEntry struct {
	Name    string
	GID     uint32
	Members []string
}

// maxIDFile bounds how much of an image's passwd/group file is read.
const maxIDFile = 4 << 20

// ParsePasswd parses /etc/passwd content; malformed lines are skipped.
func ParsePasswd(r io.Reader) ([]PasswdEntry, error) {
	var out []PasswdEntry
	err := scanLines(r, func(f []string) {
		if len(f) < 7 || f[0] == "" {
			return
		}
		uid, err1 := parseID(f[2])
		gid, err2 := parseID(f[3])
		if err1 != nil || err2 != nil {
			return
		}
		out = append(out, PasswdEntry{Name: f[0], UID: uid, GID: gid, Home: f[5]})
	})
	return out, err
}

// ParseGroup parses /etc/group content; malformed lines are skipped.
func ParseGroup(r io.Reader) ([]GroupEntry, error) {
	var out []GroupEntry
	err := scanLines(r, func(f []string) {
		if len(f) < 4 || f[0] == "" {
			return
		}
		gid, err := parseID(f[2])
		if err != nil {
			return
		}
		var members []string
		for _, m := range strings.Split(f[3], ",") {
			if m = strings.TrimSpace(m); m != "" {
				members = append(members, m)
			}
		}
		out = append(out, GroupEntry{Name: f[0], GID: gid, Members: members})
	})
	return out, err
}

func scanLines(r io.Reader, fn func([]string)) error {
	sc := bufio.NewScanner(io.LimitReader(r, maxIDFile))
	sc.Buffer(make([]byte, 4096), 64*1024)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' || bytes.IndexByte(line, 0) >= 0 {
			continue
		}
		fn(strings.Split(string(line), ":"))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("parse id file: %w", err)
	}
	return nil
}

// parseID accepts 0..2^32-2 (2^32-1 is the kernel's "no id").
func parseID(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v == 0xffffffff {
		return 0, fmt.Errorf("bad id %q", s)
	}
	return uint32(v), nil
}

// ResolveUser resolves a Docker-style user ("name", "uid", "name:group",
// "uid:gid", "" for root) against the rootfs's /etc/passwd and /etc/group,
// read without following symlinks out of the rootfs. Supplementary groups
// are the groups listing the user as a member. It also returns the home
// directory ("/" when unknown).
func ResolveUser(rootfs, user string) (specs.User, string, error) {
	var u specs.User
	home := "/"
	name, group, hasGroup := strings.Cut(user, ":")
	if name == "" && hasGroup {
		return u, home, fmt.Errorf("user %q: empty user", user)
	}
	rootfd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return u, home, fmt.Errorf("open rootfs %s: %w", rootfs, err)
	}
	defer unix.Close(rootfd)
	passwd, err := readIDFile(rootfd, "/etc/passwd", ParsePasswd)
	if err != nil {
		return u, home, err
	}
	groups, err := readIDFile(rootfd, "/etc/group", ParseGroup)
	if err != nil {
		return u, home, err
	}
	if name == "" {
		name = "0"
	}
	var pw *PasswdEntry
	for i := range passwd {
		if passwd[i].Name == name {
			pw = &passwd[i]
			break
		}
	}
	if pw == nil {
		uid, err := parseID(name)
		if err != nil {
			return u, home, fmt.Errorf("user %q not found in /etc/passwd", name)
		}
		u.UID = uid
		for i := range passwd {
			if passwd[i].UID == uid {
				pw = &passwd[i]
				break
			}
		}
	}
	if pw != nil {
		u.UID, u.GID, home = pw.UID, pw.GID, pw.Home
		if home == "" {
			home = "/"
		}
	}
	if hasGroup {
		found := false
		for _, g := range groups {
			if g.Name == group {
				u.GID, found = g.GID, true
				break
			}
		}
		if !found {
			gid, err := parseID(group)
			if err != nil {
				return u, home, fmt.Errorf("group %q not found in /etc/group", group)
			}
			u.GID = gid
		}
	}
	if pw != nil {
		for _, g := range groups {
			for _, m := range g.Members {
				if m == pw.Name && g.GID != u.GID {
					u.AdditionalGids = append(u.AdditionalGids, g.GID)
				}
			}
		}
	}
	return u, home, nil
}

func readIDFile[T any](rootfd int, path string, parse func(io.Reader) ([]T, error)) ([]T, error) {
	// O_NONBLOCK: a FIFO planted as /etc/passwd must not hang the open.
	fd, err := inRoot(rootfd, path, unix.O_RDONLY|unix.O_NONBLOCK)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s in rootfs is not a regular file", path)
	}
	return parse(f)
}
