//go:build linux

package supervise

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"cairn.dev/cairn/init/reap"
	"cairn.dev/cairn/os/schema"
)

// Run-time pulls. PID 1 does not link go-containerregistry (binary size is
// boot time): an image with pull_policy missing or always is fetched by
// the full tool binary, run as PID 1's child:
//
//	/usr/bin/cairn-init images --root /var/lib/cairn/images pull --json [--if-missing] REF
//
// which prints one JSON object (runtime/ctr ImageInfo): the image config
// and the ordered lowerdirs of its unpacked layer snapshots. The container
// is then built from those lowerdirs exactly as from a baked image.
const (
	// ToolBinary is the full build of cairn-init (images, ctr).
	ToolBinary = "/usr/bin/cairn-init"
	// ImageStore is the tool's image store on STATE.
	ImageStore = "/var/lib/cairn/images"
	// DockerConfigDir holds config.json with registry credentials (the
	// "auths" of a docker config.json; optional). It is passed to the tool
	// as DOCKER_CONFIG.
	DockerConfigDir = "/var/lib/cairn/docker"
	// StatePulling: the service's image is being pulled (or the pull is
	// being retried).
	StatePulling = "pulling"
	// maxPullOutput bounds what is read of the tool's output.
	maxPullOutput = 1 << 20
)

// Puller fetches an image at run time. always pulls even when the store
// has the image (pull_policy always); otherwise only a missing image is
// fetched (pull_policy missing).
type Puller interface {
	Pull(ctx context.Context, ref string, always bool) (*Image, error)
}

// ToolPuller runs the tool binary's "images pull --json" as a child that
// PID 1's reaper does not steal.
type ToolPuller struct {
	Binary, Store, DockerConfig string
	Reaper                      *reap.Reaper
	// Timeout bounds one attempt (default 10 minutes).
	Timeout time.Duration
}

// pullInfo is the JSON that "cairn-init images pull --json" prints
// (runtime/ctr ImageInfo; the two are tested against the same contract).
type pullInfo struct {
	Name      string          `json:"name"`
	Digest    string          `json:"digest"`
	Pulled    bool            `json:"pulled"`
	Lowerdirs []string        `json:"lowerdirs"`
	Config    json.RawMessage `json:"config"`
}

// Pull runs one attempt.
func (p *ToolPuller) Pull(ctx context.Context, ref string, always bool) (*Image, error) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := []string{"images", "--root", p.Store, "pull", "--json"}
	if !always {
		args = append(args, "--if-missing")
	}
	args = append(args, "--", ref)
	cmd := exec.CommandContext(ctx, p.Binary, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "DOCKER_CONFIG=" + p.DockerConfig}
	var out, errb limitedBuffer
	out.max, errb.max = maxPullOutput, 8<<10
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second
	r := p.Reaper
	if r == nil {
		r = reap.New()
	}
	if err := r.StartCmd(cmd); err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	if err := r.WaitCmd(cmd); err != nil {
		msg := strings.TrimSpace(errb.String())
		msg = strings.TrimPrefix(msg, "cairn-init images: ")
		if ctx.Err() != nil {
			return nil, fmt.Errorf("pull %s: %w (%s)", ref, ctx.Err(), msg)
		}
		if msg == "" {
			return nil, fmt.Errorf("pull %s: %s: %w", ref, p.Binary, err)
		}
		return nil, errors.New(msg) // the tool's message names ref
	}
	if out.over {
		return nil, fmt.Errorf("pull %s: %s printed more than %d bytes", ref, p.Binary, maxPullOutput)
	}
	img, err := parsePullInfo(out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("pull %s: %s: %w", ref, p.Binary, err)
	}
	img.Ref = ref
	return img, nil
}

// parsePullInfo checks the tool's JSON: lowerdirs must be clean absolute
// paths that overlayfs options can carry, and the config as for a baked
// image.
func parsePullInfo(raw []byte) (*Image, error) {
	var info pullInfo
	if err := json.Unmarshal(raw, &info); err != nil {
		return nil, fmt.Errorf("image info: %w", err)
	}
	if len(info.Lowerdirs) == 0 {
		return nil, errors.New("image info: the image has no layers")
	}
	for i, d := range info.Lowerdirs {
		if !filepath.IsAbs(d) || filepath.Clean(d) != d || strings.ContainsAny(d, ",:\\\x00\n") {
			return nil, fmt.Errorf("image info: lowerdirs[%d] %q is not a clean absolute path overlayfs options can carry", i, d)
		}
	}
	cfg := []byte(`{}`)
	if len(info.Config) > 0 && string(info.Config) != "null" {
		cfg = info.Config
	}
	c, err := parseImageConfig([]byte(`{"config":` + string(cfg) + `}`))
	if err != nil {
		return nil, fmt.Errorf("image info: %w", err)
	}
	return &Image{Ref: info.Name, Lowerdirs: info.Lowerdirs, Config: c}, nil
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); len(p) > room {
		b.over = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

// runTimePull tells whether def's image is pulled at run time.
func runTimePull(policy string) bool {
	return policy == schema.PullMissing || policy == schema.PullAlways
}

// pullImage pulls def's image, retrying with capped exponential backoff
// (the network may come up later) until it succeeds or ctx ends. s, if
// not nil, is the service whose state shows "pulling"; its restart
// command retries at once.
func (sv *Supervisor) pullImage(ctx context.Context, s *service, who string, def *schema.Service) (*Image, error) {
	if sv.o.Puller == nil {
		return nil, fmt.Errorf("image %q: pull_policy %s: no puller", def.Image, def.PullPolicy)
	}
	always := def.PullPolicy == schema.PullAlways
	if sv.o.Online != nil {
		select {
		case <-sv.o.Online:
		default:
			if s != nil {
				sv.update(s, func(st *Status) {
					st.State, st.PID, st.Message = StatePulling, 0, "waiting for the network to be online"
				})
			}
			select {
			case <-sv.o.Online:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	for attempt := 0; ; attempt++ {
		if s != nil {
			sv.update(s, func(st *Status) {
				st.State, st.PID = StatePulling, 0
				if attempt == 0 {
					st.Message = "pulling " + def.Image
				}
			})
		}
		if attempt == 0 {
			sv.console("%s: pulling %s (pull_policy %s)", who, def.Image, def.PullPolicy)
		}
		img, err := sv.o.Puller.Pull(ctx, def.Image, always)
		if err == nil {
			sv.console("%s: pulled %s", who, def.Image)
			return img, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		delay := sv.pullBackoff(attempt)
		if s != nil {
			sv.update(s, func(st *Status) { st.Message = fmt.Sprintf("%v; retrying in %v", err, delay) })
		}
		sv.console("%s: %v; retrying in %v (attempt %d)", who, err, delay, attempt+1)
		t := time.NewTimer(delay)
		var cmds chan command
		if s != nil {
			cmds = s.cmds
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
				break wait
			case c := <-cmds:
				if c.restart {
					c.reply <- nil
					t.Stop()
					break wait
				}
				c.reply <- fmt.Errorf("%s: not running (pulling its image)", who)
			}
		}
	}
}

// pullBackoff is the delay after failed attempt n: PullBackoffMin doubling
// up to BackoffMax.
func (sv *Supervisor) pullBackoff(n int) time.Duration {
	d := sv.o.PullBackoffMin
	for i := 0; i < n && d < sv.o.BackoffMax; i++ {
		d *= 2
	}
	return min(d, sv.o.BackoffMax)
}
