package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"cairn.dev/cairn/internal/atomicfile"
)

// Store keeps the server's state: reboot leases per group, update reports,
// the machines that rolled back per (channel, version), and paused
// versions. Every method is safe for concurrent use, also by several
// server processes sharing the store.
type Store interface {
	// Lock takes or renews id's lease in group, valid until now+ttl. It
	// reports false when the group already has limit live holders.
	Lock(ctx context.Context, group, id string, limit int, ttl time.Duration, now time.Time) (bool, error)
	// Unlock releases id's lease in group, if it holds one.
	Unlock(ctx context.Context, group, id string, now time.Time) error
	// Holders lists the live leases of group.
	Holders(ctx context.Context, group string, now time.Time) ([]Holder, error)
	// AddReport stores r. For a rolled_back report it counts the distinct
	// machines that rolled back from (channel, to_version) and pauses that
	// version once they reach threshold (0 disables pausing). It reports
	// whether the version is paused.
	AddReport(ctx context.Context, r Report, threshold int) (bool, error)
	// Reports returns the newest reports of channel ("" for all), at most limit.
	Reports(ctx context.Context, channel string, limit int) ([]Report, error)
	// Paused lists the paused versions of channel, sorted.
	Paused(ctx context.Context, channel string) ([]string, error)
	// SetPaused pauses or resumes a version (operator action).
	SetPaused(ctx context.Context, channel, version string, paused bool) error
	Close() error
}

// Holder is one reboot lease.
type Holder struct {
	ID      string    `json:"id"`
	Expires time.Time `json:"expires"`
}

// semaphore is a group's leases; both stores keep it as one JSON value and
// change it with the same two functions.
type semaphore struct {
	Holders []Holder `json:"holders"`
}

func (s *semaphore) prune(now time.Time) {
	s.Holders = slices.DeleteFunc(s.Holders, func(h Holder) bool { return !now.Before(h.Expires) })
}

// lock implements the recursive, owned counting semaphore of FleetLock.
func (s *semaphore) lock(id string, limit int, ttl time.Duration, now time.Time) bool {
	s.prune(now)
	for i := range s.Holders {
		if s.Holders[i].ID == id {
			s.Holders[i].Expires = now.Add(ttl)
			return true
		}
	}
	if len(s.Holders) >= limit {
		return false
	}
	s.Holders = append(s.Holders, Holder{ID: id, Expires: now.Add(ttl)})
	return true
}

func (s *semaphore) unlock(id string, now time.Time) {
	s.prune(now)
	s.Holders = slices.DeleteFunc(s.Holders, func(h Holder) bool { return h.ID == id })
}

// maxFileReports bounds the reports the file store keeps (oldest dropped).
const maxFileReports = 10000

// fileState is the JSON document of the file store.
type fileState struct {
	Locks map[string]*semaphore `json:"locks"`
	// Rollbacks maps channel → version → machine ids that rolled back.
	Rollbacks map[string]map[string][]string `json:"rollbacks"`
	// Paused maps channel → paused versions.
	Paused  map[string][]string `json:"paused"`
	Reports []Report            `json:"reports"`
}

// FileStore keeps the state in one JSON file, locked with flock(2) for
// every operation and replaced atomically (temporary file, fsync, rename),
// so several processes on one host may share it.
type FileStore struct {
	path string
}

// NewFileStore opens (creating on first write) the store at path.
func NewFileStore(path string) (*FileStore, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("file store: %w", err)
	}
	s := &FileStore{path: path}
	// Fail early on an unreadable or corrupt file.
	if err := s.update(context.Background(), false, func(*fileState) error { return nil }); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *FileStore) update(ctx context.Context, write bool, fn func(*fileState) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	lf, err := os.OpenFile(s.path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("file store: %w", err)
	}
	defer lf.Close()
	how := unix.LOCK_SH
	if write {
		how = unix.LOCK_EX
	}
	if err := unix.Flock(int(lf.Fd()), how); err != nil {
		return fmt.Errorf("file store: lock: %w", err)
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN)

	st := &fileState{}
	data, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("file store: %w", err)
	default:
		if err := json.Unmarshal(data, st); err != nil {
			return fmt.Errorf("file store %s: %w", s.path, err)
		}
	}
	if st.Locks == nil {
		st.Locks = map[string]*semaphore{}
	}
	if st.Rollbacks == nil {
		st.Rollbacks = map[string]map[string][]string{}
	}
	if st.Paused == nil {
		st.Paused = map[string][]string{}
	}
	if err := fn(st); err != nil {
		return err
	}
	if !write {
		return nil
	}
	out, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return fmt.Errorf("file store: encode: %w", err)
	}
	if err := atomicfile.WriteFile(s.path, out, 0o600); err != nil {
		return fmt.Errorf("file store: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(s.path)); err != nil {
		return fmt.Errorf("file store: %w", err)
	}
	return nil
}

// Lock implements Store.
func (s *FileStore) Lock(ctx context.Context, group, id string, limit int, ttl time.Duration, now time.Time) (bool, error) {
	var ok bool
	err := s.update(ctx, true, func(st *fileState) error {
		sem := st.Locks[group]
		if sem == nil {
			sem = &semaphore{}
			st.Locks[group] = sem
		}
		ok = sem.lock(id, limit, ttl, now)
		return nil
	})
	return ok, err
}

// Unlock implements Store.
func (s *FileStore) Unlock(ctx context.Context, group, id string, now time.Time) error {
	return s.update(ctx, true, func(st *fileState) error {
		if sem := st.Locks[group]; sem != nil {
			sem.unlock(id, now)
			if len(sem.Holders) == 0 {
				delete(st.Locks, group)
			}
		}
		return nil
	})
}

// Holders implements Store.
func (s *FileStore) Holders(ctx context.Context, group string, now time.Time) ([]Holder, error) {
	var hs []Holder
	err := s.update(ctx, false, func(st *fileState) error {
		if sem := st.Locks[group]; sem != nil {
			sem.prune(now)
			hs = sem.Holders
		}
		return nil
	})
	return hs, err
}

// AddReport implements Store.
func (s *FileStore) AddReport(ctx context.Context, r Report, threshold int) (bool, error) {
	var paused bool
	err := s.update(ctx, true, func(st *fileState) error {
		st.Reports = append(st.Reports, r)
		if n := len(st.Reports); n > maxFileReports {
			st.Reports = slices.Delete(st.Reports, 0, n-maxFileReports)
		}
		if r.Outcome == OutcomeRolledBack {
			byVer := st.Rollbacks[r.Channel]
			if byVer == nil {
				byVer = map[string][]string{}
				st.Rollbacks[r.Channel] = byVer
			}
			if !slices.Contains(byVer[r.ToVersion], r.ID) {
				byVer[r.ToVersion] = append(byVer[r.ToVersion], r.ID)
			}
			if threshold > 0 && len(byVer[r.ToVersion]) >= threshold && !slices.Contains(st.Paused[r.Channel], r.ToVersion) {
				st.Paused[r.Channel] = append(st.Paused[r.Channel], r.ToVersion)
				slices.Sort(st.Paused[r.Channel])
			}
		}
		paused = slices.Contains(st.Paused[r.Channel], r.ToVersion)
		return nil
	})
	return paused, err
}

// Reports implements Store.
func (s *FileStore) Reports(ctx context.Context, channel string, limit int) ([]Report, error) {
	var out []Report
	err := s.update(ctx, false, func(st *fileState) error {
		for i := len(st.Reports) - 1; i >= 0 && len(out) < limit; i-- {
			if channel == "" || st.Reports[i].Channel == channel {
				out = append(out, st.Reports[i])
			}
		}
		return nil
	})
	return out, err
}

// Paused implements Store.
func (s *FileStore) Paused(ctx context.Context, channel string) ([]string, error) {
	var out []string
	err := s.update(ctx, false, func(st *fileState) error {
		out = slices.Clone(st.Paused[channel])
		return nil
	})
	return out, err
}

// SetPaused implements Store.
func (s *FileStore) SetPaused(ctx context.Context, channel, version string, paused bool) error {
	return s.update(ctx, true, func(st *fileState) error {
		vs := slices.DeleteFunc(st.Paused[channel], func(v string) bool { return v == version })
		if paused {
			vs = append(vs, version)
			slices.Sort(vs)
		} else if byVer := st.Rollbacks[channel]; byVer != nil {
			// Resuming starts the rollback count afresh.
			delete(byVer, version)
		}
		if len(vs) == 0 {
			delete(st.Paused, channel)
		} else {
			st.Paused[channel] = vs
		}
		return nil
	})
}

// Close implements Store.
func (s *FileStore) Close() error { return nil }
