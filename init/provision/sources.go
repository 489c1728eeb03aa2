package provision

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// FwCfgName is the fw_cfg item `cairn run --fw-cfg FILE` fills.
const FwCfgName = "opt/dev.cairn/config"

// readLimited reads at most MaxConfigSize bytes of r, failing beyond.
func readLimited(r io.Reader, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if len(b) > MaxConfigSize {
		return nil, fmt.Errorf("%s: more than %d bytes", what, MaxConfigSize)
	}
	return b, nil
}

// fromFwCfg reads the fw_cfg item through the qemu_fw_cfg sysfs tree,
// loading the module first if the tree is not there.
func fromFwCfg(ctx context.Context, o *Options) (*Found, error) {
	base := filepath.Join(o.Sys, "firmware", "qemu_fw_cfg")
	if _, err := os.Stat(base); err != nil && o.LoadFwCfg != nil {
		if err := o.LoadFwCfg(ctx); err != nil {
			return nil, fmt.Errorf("fw_cfg: %w", err)
		}
	}
	raw := filepath.Join(base, "by_name", filepath.FromSlash(FwCfgName), "raw")
	f, err := os.Open(raw)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fw_cfg: %w", err)
	}
	defer f.Close()
	b, err := readLimited(f, "fw_cfg "+FwCfgName)
	if err != nil {
		return nil, err
	}
	return &Found{Source: Source{Kind: "fw_cfg", Name: "fw_cfg " + FwCfgName}, Data: b}, nil
}

// noDowngrade wraps c so that a redirect from https to anything else is
// refused (the client's own redirect policy still applies).
func noDowngrade(c *http.Client) *http.Client {
	cc := *c
	prev := c.CheckRedirect
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) > 0 && via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("redirect from %s to %s refused: it leaves https", via[0].URL.Redacted(), req.URL.Redacted())
		}
		if prev != nil {
			return prev(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &cc
}

// fromCmdline fetches cairn.config=URL once the network is online, with
// bounded retries and doubling backoff. With cairn.config.sha256=HEX the
// config must have that hash; over plain http without one, a warning is
// logged (the config is root-equivalent and http has no integrity).
func fromCmdline(ctx context.Context, o *Options) (*Found, error) {
	raw, ok := o.Args[ArgURL]
	if !ok {
		return nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("cmdline %s=%q: not an http:// or https:// URL", ArgURL, raw)
	}
	name := "cmdline " + u.Redacted()
	var pin []byte
	if h, ok := o.Args[ArgSHA256]; ok {
		pin, err = hex.DecodeString(h)
		if err != nil || len(pin) != sha256.Size {
			return nil, fmt.Errorf("%s: %s=%q is not a hex sha256", name, ArgSHA256, h)
		}
	} else if u.Scheme == "http" {
		o.Logf("warning: %s: plain http without %s: the config is not integrity-protected", name, ArgSHA256)
	}
	if o.Online == nil {
		return nil, fmt.Errorf("%s: no network", name)
	}
	if err := o.Online(ctx); err != nil {
		return nil, fmt.Errorf("%s: network: %w", name, err)
	}
	var last error
	wait := o.Backoff
	for i := 0; i < o.URLAttempts; i++ {
		if i > 0 {
			o.Logf("%s: %v; retrying in %v", name, last, wait)
			if err := sleep(ctx, wait); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			wait *= 2
		}
		b, status, err := get(ctx, noDowngrade(o.HTTP), http.MethodGet, u.String(), nil, 10*time.Second)
		switch {
		case err != nil:
			last = err
		case status != http.StatusOK:
			last = fmt.Errorf("HTTP status %d", status)
		default:
			if sum := sha256.Sum256(b); pin != nil && !bytes.Equal(sum[:], pin) {
				// Not retried: a different config is not a transient failure.
				return nil, fmt.Errorf("%s: sha256 %x, but %s pins %x; refused", name, sum, ArgSHA256, pin)
			}
			return &Found{Source: Source{Kind: "cmdline", Name: name}, Data: b}, nil
		}
	}
	return nil, fmt.Errorf("%s: %v; giving up after %d attempts", name, last, o.URLAttempts)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// get does one request with a timeout and returns the (bounded) body and
// status.
func get(ctx context.Context, c *http.Client, method, u string, hdr map[string]string, timeout time.Duration) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, 0, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := readLimited(resp.Body, u)
	if err != nil {
		return nil, resp.StatusCode, err
	}
	return b, resp.StatusCode, nil
}

// Cloud is a metadata service that DMI identifies.
type Cloud string

// Clouds.
const (
	EC2       Cloud = "ec2"
	OpenStack Cloud = "openstack"
)

// DetectCloud reads DMI (sys_vendor, product_name, chassis_asset_tag under
// sys/class/dmi/id) and returns the cloud it names, or "".
func DetectCloud(sys string) Cloud {
	var vals []string
	for _, f := range []string{"sys_vendor", "product_name", "chassis_asset_tag", "bios_vendor"} {
		b, err := os.ReadFile(filepath.Join(sys, "class", "dmi", "id", f))
		if err == nil {
			vals = append(vals, strings.TrimSpace(string(b)))
		}
	}
	for _, v := range vals {
		switch {
		case strings.Contains(v, "Amazon EC2"):
			return EC2
		case strings.Contains(v, "OpenStack Nova"), strings.Contains(v, "OpenStack Compute"):
			return OpenStack
		}
	}
	return ""
}

// metadataTimeout bounds one request to the metadata service.
const metadataTimeout = 2 * time.Second

// fromMetadata reads user-data from the metadata service of the cloud DMI
// names; it does nothing elsewhere.
func fromMetadata(ctx context.Context, o *Options) (*Found, error) {
	cloud := DetectCloud(o.Sys)
	if cloud == "" {
		return nil, nil
	}
	if o.Online == nil {
		return nil, fmt.Errorf("%s metadata: no network", cloud)
	}
	if err := o.Online(ctx); err != nil {
		return nil, fmt.Errorf("%s metadata: network: %w", cloud, err)
	}
	var last error
	for i := 0; i < 3; i++ {
		if i > 0 {
			if err := sleep(ctx, o.Backoff); err != nil {
				return nil, err
			}
		}
		f, err := metadataOnce(ctx, o, cloud)
		if err == nil {
			return f, nil
		}
		last = err
	}
	return nil, last
}

func metadataOnce(ctx context.Context, o *Options, cloud Cloud) (*Found, error) {
	var (
		path string
		hdr  map[string]string
	)
	switch cloud {
	case EC2:
		// IMDSv2: a session token first.
		tok, status, err := get(ctx, o.HTTP, http.MethodPut, o.MetadataURL+"/latest/api/token",
			map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "300"}, metadataTimeout)
		if err != nil {
			return nil, fmt.Errorf("ec2 metadata token: %w", err)
		}
		if status != http.StatusOK {
			return nil, fmt.Errorf("ec2 metadata token: HTTP status %d", status)
		}
		path, hdr = "/latest/user-data", map[string]string{"X-aws-ec2-metadata-token": strings.TrimSpace(string(tok))}
	case OpenStack:
		path = "/openstack/latest/user_data"
	}
	name := fmt.Sprintf("%s user-data", cloud)
	b, status, err := get(ctx, o.HTTP, http.MethodGet, o.MetadataURL+path, hdr, metadataTimeout)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: %w", name, err)
	case status == http.StatusNotFound:
		return nil, nil // no user-data: not an error, nothing found
	case status != http.StatusOK:
		return nil, fmt.Errorf("%s: HTTP status %d", name, status)
	}
	return &Found{Source: Source{Kind: string(cloud), Name: name}, Data: b}, nil
}
