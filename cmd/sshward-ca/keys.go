package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/keys"
	"github.com/sshward/sshward/ca/tlsca"
)

// keysConfig is config.yaml's keys: CA keys in a hardware module by
// pkcs11 URI (README: CA keys in a hardware module). The PIN comes from
// the file the URI's pin-source names; a pin-value is refused.
type keysConfig struct {
	// KMS is the token new keys are made in: by init --kms and for a
	// tier added to the policy later (a rotation makes the new key in the
	// token of the key it replaces). Its id= and object= are ignored: each
	// key gets its own.
	KMS string `yaml:"kms"`
	// Host and Tiers name keys that exist in a token already (made with
	// the module's tools) to use when DIR/keys holds no key of that name
	// yet. After that, DIR/keys/NAME.uri names the signing key (a rotation
	// changes it; sshward-ca keys list shows it).
	Host  string            `yaml:"host"`
	Tiers map[string]string `yaml:"tiers"`
}

func (k keysConfig) check() error {
	check := func(what, u string) error {
		if u == "" {
			return nil
		}
		if !strings.HasPrefix(strings.ToLower(u), keys.PKCS11Scheme+":") {
			return fmt.Errorf("keys.%s: not a %s: uri", what, keys.PKCS11Scheme)
		}
		if strings.Contains(strings.ToLower(u), "pin-value") {
			return fmt.Errorf("keys.%s holds pin-value: put the PIN in a file (mode 0600) and name it with ?pin-source=FILE", what)
		}
		return nil
	}
	if err := check("kms", k.KMS); err != nil {
		return err
	}
	if err := check("host", k.Host); err != nil {
		return err
	}
	for t, u := range k.Tiers {
		if err := check("tiers."+t, u); err != nil {
			return err
		}
	}
	return nil
}

// uri is the configured URI of id's key, "" when none.
func (k keysConfig) uri(id ca.KeyID) string {
	if id.Host {
		return k.Host
	}
	return k.Tiers[id.Tier]
}

// ensureKey makes sure DIR/keys holds id's key: a key the config names in
// a token, else a new key in the config's kms token, else (a tier's user
// CA only: init made the host CA) a new encrypted key file. It reports
// what it did, "" when the key was there.
func ensureKey(ctx context.Context, l layout, kc keysConfig, id ca.KeyID, pass []byte, now time.Time) (string, error) {
	name := l.keyName(id)
	if exists, err := keys.RingExists(l.keys(), name); err != nil || exists {
		return "", err
	}
	var k *keys.Key
	var err error
	var did string
	switch {
	case kc.uri(id) != "":
		k, err = keys.AddToken(ctx, keys.TokenRequest{Dir: l.keys(), Name: name, URI: kc.uri(id), Comment: keyComment(id)})
		did = "uses the key in the token config.yaml names"
	case kc.KMS != "":
		var u string
		if u, err = keys.TokenKeyURI(kc.KMS, name, now); err != nil {
			return "", err
		}
		k, err = keys.AddToken(ctx, keys.TokenRequest{Dir: l.keys(), Name: name, URI: u, Create: true, Comment: keyComment(id)})
		did = "created in the token"
	case id.Host:
		return "", fmt.Errorf("%s has no host CA key (%s.key or %s.uri)", l.keys(), name, name)
	default:
		k, err = keys.Create(ctx, keys.CreateRequest{Dir: l.keys(), Name: name, Passphrase: pass, Comment: keyComment(id)})
		did = "created as an encrypted key file"
	}
	if err != nil {
		return "", fmt.Errorf("create %s: %w", id, err)
	}
	k.Close()
	return did, nil
}

// ensureKeys runs ensureKey for every tier's user CA and the host CA.
func ensureKeys(ctx context.Context, l layout, kc keysConfig, tiers []string, pass []byte, log *slog.Logger) error {
	for t := range kc.Tiers {
		if !slices.Contains(tiers, t) {
			return fmt.Errorf("config.yaml keys.tiers names tier %q, which policy.yaml does not have", t)
		}
	}
	ids := []ca.KeyID{ca.HostKey}
	for _, t := range tiers {
		ids = append(ids, ca.UserKey(t))
	}
	for _, id := range ids {
		did, err := ensureKey(ctx, l, kc, id, pass, time.Now())
		if err != nil {
			return err
		}
		if did != "" && log != nil {
			log.Info("CA key "+did, "key", id.String())
		}
	}
	return nil
}

// openPassphraseCheck opens the TLS root key with pass: every CA has it as
// a key file under the CA passphrase, also when its SSH CA keys are in a
// token, so it tells a wrong passphrase.
func openPassphraseCheck(ctx context.Context, l layout, pass []byte) (*tlsca.Root, error) {
	return tlsca.LoadRoot(ctx, l.tls(), pass)
}
