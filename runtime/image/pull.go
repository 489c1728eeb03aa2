package image

import (
	"context"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// DefaultPlatform is the platform picked from multi-arch indexes.
var defaultPlatform = v1.Platform{OS: "linux", Architecture: "amd64"}

// PullOption configures Pull.
type PullOption func(*pullOptions)

type pullOptions struct {
	keychain  authn.Keychain
	transport http.RoundTripper
	platform  v1.Platform
}

// WithKeychain sets where credentials come from (default: the docker
// config.json at DefaultDockerConfigPath).
func WithKeychain(k authn.Keychain) PullOption { return func(o *pullOptions) { o.keychain = k } }

// WithTransport sets the HTTP transport (default http.DefaultTransport).
func WithTransport(t http.RoundTripper) PullOption { return func(o *pullOptions) { o.transport = t } }

// WithPlatform sets the platform picked from an index (default linux/amd64).
func WithPlatform(p v1.Platform) PullOption { return func(o *pullOptions) { o.platform = p } }

// Pull fetches ref (by tag or digest; an index resolves to the platform's
// manifest) from its registry into the store and names it ref.
func (s *Store) Pull(ctx context.Context, ref string, opts ...PullOption) (Image, error) {
	o := pullOptions{platform: defaultPlatform}
	for _, f := range opts {
		f(&o)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return Image{}, fmt.Errorf("image: pull: %w", err)
	}
	if o.keychain == nil {
		kc, err := LoadDockerConfig(DefaultDockerConfigPath())
		if err != nil {
			return Image{}, fmt.Errorf("image: pull %s: %w", r, err)
		}
		o.keychain = kc
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(o.keychain), remote.WithPlatform(o.platform)}
	if o.transport != nil {
		ropts = append(ropts, remote.WithTransport(o.transport))
	}
	img, err := remote.Image(r, ropts...)
	if err != nil {
		return Image{}, fmt.Errorf("image: pull %s: %w", r, err)
	}
	if err := checkPlatform(img, o.platform); err != nil {
		return Image{}, fmt.Errorf("image: pull %s: %w", r, err)
	}
	added, err := s.Add(ctx, img)
	if err != nil {
		return Image{}, fmt.Errorf("image: pull %s: %w", r, err)
	}
	if err := s.Tag(ctx, r.Name(), added.Digest); err != nil {
		return Image{}, err
	}
	return Image{Name: r.Name(), Digest: added.Digest}, nil
}

// checkPlatform rejects a single-platform image built for another platform
// (remote.WithPlatform only filters indexes).
func checkPlatform(img v1.Image, p v1.Platform) error {
	cfg, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if (cfg.OS != "" && cfg.OS != p.OS) || (cfg.Architecture != "" && cfg.Architecture != p.Architecture) {
		return fmt.Errorf("image is for %s/%s, want %s/%s", cfg.OS, cfg.Architecture, p.OS, p.Architecture)
	}
	return nil
}
