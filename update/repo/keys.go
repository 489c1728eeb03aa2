package repo

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Roles are the four top-level TUF roles, each with its own key.
var Roles = []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP}

// Key files. A keys directory (mode 0700) holds, for each role in Roles:
//
//	<role>.key  the ed25519 private key, PEM "PRIVATE KEY" (PKCS #8), mode 0600
//	<role>.pub  its public key, PEM "PUBLIC KEY" (PKIX), mode 0644
//
// Only the .key files are read back; the .pub files are for people. Publish
// needs targets, snapshot and timestamp; only Init and RotateRoot need
// root.key, which can otherwise stay offline.
const (
	keySuffix = ".key"
	pubSuffix = ".pub"
)

// InitKeys creates dir (0700) and a new ed25519 key for each role in it. It
// refuses to overwrite an existing key.
func InitKeys(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("keys directory: %w", err)
	}
	for _, role := range Roles {
		if _, err := os.Stat(filepath.Join(dir, role+keySuffix)); err == nil {
			return fmt.Errorf("key %s already exists: refusing to overwrite it", filepath.Join(dir, role+keySuffix))
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("keys directory: %w", err)
		}
	}
	for _, role := range Roles {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return fmt.Errorf("generate %s key: %w", role, err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return fmt.Errorf("encode %s key: %w", role, err)
		}
		pubDER, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return fmt.Errorf("encode %s public key: %w", role, err)
		}
		if err := writeNew(filepath.Join(dir, role+keySuffix), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, role+pubSuffix), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
			return fmt.Errorf("write %s public key: %w", role, err)
		}
	}
	return nil
}

func writeNew(p string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", p, err)
	}
	return nil
}

// roleKey is a role's private key with its TUF form.
type roleKey struct {
	priv   ed25519.PrivateKey
	key    *metadata.Key
	id     string
	signer signature.Signer
}

// loadKey reads the key of role from dir.
func loadKey(dir, role string) (*roleKey, error) {
	p := filepath.Join(dir, role+keySuffix)
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("%s key: %w", role, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s key %s is readable by others (mode %v): chmod 600 it", role, p, st.Mode().Perm())
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("%s key: %w", role, err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s key %s: no PEM PRIVATE KEY block", role, p)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s key %s: %w", role, p, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s key %s: %T, want ed25519", role, p, k)
	}
	key, err := metadata.KeyFromPublicKey(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("%s key: %w", role, err)
	}
	id, err := key.ID()
	if err != nil {
		return nil, fmt.Errorf("%s key id: %w", role, err)
	}
	signer, err := signature.LoadED25519Signer(priv)
	if err != nil {
		return nil, fmt.Errorf("%s signer: %w", role, err)
	}
	return &roleKey{priv: priv, key: key, id: id, signer: signer}, nil
}
