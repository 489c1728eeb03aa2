package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdStore keeps the state in etcd (v3 API) so several servers share the
// reboot leases. A group's leases are one JSON value changed by
// compare-and-swap transactions on its mod revision, so concurrent
// pre-reboot calls on any number of servers never exceed the limit.
//
// Keys, under the prefix (default "/cairn/"), with every client-supplied
// part path-escaped:
//
//	locks/<group>                         {"holders":[{"id","expires"}]}
//	reports/<unix-nanos>-<id>             a Report
//	rollbacks/<channel>/<version>/<id>    "" (one key per machine)
//	paused/<channel>/<version>            ""
type EtcdStore struct {
	c      *clientv3.Client
	prefix string
}

// NewEtcdStore connects to the comma-separated endpoints.
func NewEtcdStore(ctx context.Context, endpoints []string, prefix string) (*EtcdStore, error) {
	if prefix == "" {
		prefix = "/cairn/"
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Context: ctx})
	if err != nil {
		return nil, fmt.Errorf("etcd store: %w", err)
	}
	// Fail early when etcd is unreachable.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.Get(cctx, prefix+"probe"); err != nil {
		c.Close()
		return nil, fmt.Errorf("etcd store %v: %w", endpoints, err)
	}
	return &EtcdStore{c: c, prefix: prefix}, nil
}

func (s *EtcdStore) key(parts ...string) string {
	var b strings.Builder
	b.WriteString(s.prefix)
	for i, p := range parts {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(url.PathEscape(p))
	}
	return b.String()
}

// casSemaphore applies fn to group's semaphore until the transaction wins.
func (s *EtcdStore) casSemaphore(ctx context.Context, group string, fn func(*semaphore)) error {
	k := s.key("locks", group)
	for {
		resp, err := s.c.Get(ctx, k)
		if err != nil {
			return fmt.Errorf("etcd store: get %s: %w", k, err)
		}
		var sem semaphore
		var rev int64
		if len(resp.Kvs) > 0 {
			if err := json.Unmarshal(resp.Kvs[0].Value, &sem); err != nil {
				return fmt.Errorf("etcd store: %s: %w", k, err)
			}
			rev = resp.Kvs[0].ModRevision
		}
		fn(&sem)
		val, err := json.Marshal(&sem)
		if err != nil {
			return fmt.Errorf("etcd store: encode: %w", err)
		}
		tx, err := s.c.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).
			Then(clientv3.OpPut(k, string(val))).
			Commit()
		if err != nil {
			return fmt.Errorf("etcd store: txn %s: %w", k, err)
		}
		if tx.Succeeded {
			return nil
		}
		// Someone else changed the semaphore: read it again.
	}
}

// Lock implements Store.
func (s *EtcdStore) Lock(ctx context.Context, group, id string, limit int, ttl time.Duration, now time.Time) (bool, error) {
	var ok bool
	err := s.casSemaphore(ctx, group, func(sem *semaphore) { ok = sem.lock(id, limit, ttl, now) })
	return ok, err
}

// Unlock implements Store.
func (s *EtcdStore) Unlock(ctx context.Context, group, id string, now time.Time) error {
	return s.casSemaphore(ctx, group, func(sem *semaphore) { sem.unlock(id, now) })
}

// Holders implements Store.
func (s *EtcdStore) Holders(ctx context.Context, group string, now time.Time) ([]Holder, error) {
	resp, err := s.c.Get(ctx, s.key("locks", group))
	if err != nil {
		return nil, fmt.Errorf("etcd store: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var sem semaphore
	if err := json.Unmarshal(resp.Kvs[0].Value, &sem); err != nil {
		return nil, fmt.Errorf("etcd store: %w", err)
	}
	sem.prune(now)
	return sem.Holders, nil
}

// AddReport implements Store.
func (s *EtcdStore) AddReport(ctx context.Context, r Report, threshold int) (bool, error) {
	val, err := json.Marshal(r)
	if err != nil {
		return false, fmt.Errorf("etcd store: encode: %w", err)
	}
	rk := s.key("reports", fmt.Sprintf("%020d-%s", r.Time.UnixNano(), r.ID))
	if _, err := s.c.Put(ctx, rk, string(val)); err != nil {
		return false, fmt.Errorf("etcd store: put report: %w", err)
	}
	pk := s.key("paused", r.Channel, r.ToVersion)
	if r.Outcome == OutcomeRolledBack {
		if _, err := s.c.Put(ctx, s.key("rollbacks", r.Channel, r.ToVersion, r.ID), ""); err != nil {
			return false, fmt.Errorf("etcd store: put rollback: %w", err)
		}
		// The count only grows, so whichever server sees it reach the
		// threshold pauses the version; pausing twice is harmless.
		cnt, err := s.c.Get(ctx, s.key("rollbacks", r.Channel, r.ToVersion)+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return false, fmt.Errorf("etcd store: count rollbacks: %w", err)
		}
		if threshold > 0 && cnt.Count >= int64(threshold) {
			if _, err := s.c.Put(ctx, pk, ""); err != nil {
				return false, fmt.Errorf("etcd store: pause: %w", err)
			}
			return true, nil
		}
	}
	resp, err := s.c.Get(ctx, pk, clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("etcd store: %w", err)
	}
	return resp.Count > 0, nil
}

// Reports implements Store.
func (s *EtcdStore) Reports(ctx context.Context, channel string, limit int) ([]Report, error) {
	var out []Report
	end := clientv3.GetPrefixRangeEnd(s.key("reports") + "/")
	for len(out) < limit {
		resp, err := s.c.Get(ctx, s.key("reports")+"/", clientv3.WithRange(end),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(limit)))
		if err != nil {
			return nil, fmt.Errorf("etcd store: %w", err)
		}
		for _, kv := range resp.Kvs {
			var r Report
			if err := json.Unmarshal(kv.Value, &r); err != nil {
				return nil, fmt.Errorf("etcd store: %s: %w", kv.Key, err)
			}
			if (channel == "" || r.Channel == channel) && len(out) < limit {
				out = append(out, r)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		end = string(resp.Kvs[len(resp.Kvs)-1].Key) // exclusive: continue below the last key
	}
	return out, nil
}

// Paused implements Store.
func (s *EtcdStore) Paused(ctx context.Context, channel string) ([]string, error) {
	p := s.key("paused", channel) + "/"
	resp, err := s.c.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("etcd store: %w", err)
	}
	out := []string{}
	for _, kv := range resp.Kvs {
		v, err := url.PathUnescape(strings.TrimPrefix(string(kv.Key), p))
		if err != nil {
			return nil, fmt.Errorf("etcd store: key %s: %w", kv.Key, err)
		}
		out = append(out, v)
	}
	slices.Sort(out)
	return out, nil
}

// SetPaused implements Store.
func (s *EtcdStore) SetPaused(ctx context.Context, channel, version string, paused bool) error {
	pk := s.key("paused", channel, version)
	var err error
	if paused {
		_, err = s.c.Put(ctx, pk, "")
	} else {
		_, err = s.c.Txn(ctx).Then(
			clientv3.OpDelete(pk),
			clientv3.OpDelete(s.key("rollbacks", channel, version)+"/", clientv3.WithPrefix()),
		).Commit()
	}
	if err != nil {
		return fmt.Errorf("etcd store: %w", err)
	}
	return nil
}

// Close implements Store.
func (s *EtcdStore) Close() error {
	if err := s.c.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("etcd store: %w", err)
	}
	return nil
}
