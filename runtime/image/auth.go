package image

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// dockerHub is the registry name go-containerregistry uses for Docker Hub.
const dockerHub = "index.docker.io"

// DockerConfig holds the static credentials of a docker config.json, keyed
// by registry host[:port]. Credential helpers (credsStore, credHelpers) are
// not supported.
type DockerConfig struct {
	auths map[string]authn.AuthConfig
}

type dockerConfigFile struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
		RegistryToken string `json:"registrytoken"`
	} `json:"auths"`
}

// ParseDockerConfig parses the contents of a docker config.json.
func ParseDockerConfig(b []byte) (*DockerConfig, error) {
	var f dockerConfigFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("image: parse docker config: %w", err)
	}
	c := &DockerConfig{auths: map[string]authn.AuthConfig{}}
	for k, a := range f.Auths {
		host := registryHost(k)
		if host == "" {
			continue
		}
		ac := authn.AuthConfig{Username: a.Username, Password: a.Password,
			IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
		if a.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, fmt.Errorf("image: docker config: auth for %q: %w", k, err)
			}
			user, pass, ok := strings.Cut(string(dec), ":")
			if !ok {
				return nil, fmt.Errorf("image: docker config: auth for %q is not user:password", k)
			}
			ac.Username, ac.Password = user, pass
		}
		c.auths[host] = ac
	}
	return c, nil
}

// LoadDockerConfig reads a docker config.json; a missing file gives an empty
// config.
func LoadDockerConfig(path string) (*DockerConfig, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &DockerConfig{auths: map[string]authn.AuthConfig{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("image: docker config: %w", err)
	}
	return ParseDockerConfig(b)
}

// DefaultDockerConfigPath is $DOCKER_CONFIG/config.json, else
// ~/.docker/config.json.
func DefaultDockerConfigPath() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".docker", "config.json")
}

// registryHost turns a config.json key ("https://index.docker.io/v1/",
// "registry.example:5000", "http://host/v2/") into host[:port].
func registryHost(key string) string {
	k := key
	if i := strings.Index(k, "://"); i >= 0 {
		k = k[i+3:]
	}
	if i := strings.IndexByte(k, '/'); i >= 0 {
		k = k[:i]
	}
	k = strings.ToLower(k)
	switch k {
	case "docker.io", "registry-1.docker.io", "index.docker.io":
		return dockerHub
	}
	return k
}

// Resolve implements authn.Keychain.
func (c *DockerConfig) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if c == nil {
		return authn.Anonymous, nil
	}
	if ac, ok := c.auths[registryHost(r.RegistryStr())]; ok {
		return authn.FromConfig(ac), nil
	}
	return authn.Anonymous, nil
}
