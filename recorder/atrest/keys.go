package atrest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"filippo.io/age"
)

// Keys are what a playback server encrypts to and decrypts with.
// Recipients encrypt new bytes; Identities (several, after a rotation)
// decrypt old and new ones.
type Keys struct {
	Recipients []age.Recipient
	Identities []age.Identity
	// RecipientStrings are the recipients as configured (age1…), what
	// agents are told to encrypt their spool to.
	RecipientStrings []string
}

// ParseRecipients parses age1… X25519 recipients.
func ParseRecipients(in []string) ([]age.Recipient, error) {
	out := make([]age.Recipient, 0, len(in))
	for _, s := range in {
		r, err := age.ParseX25519Recipient(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("recipient %q: %w", s, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// LoadIdentities reads identities from a key URI: "file:PATH" or a bare
// path. The file (age-keygen output: AGE-SECRET-KEY-1… lines, # comments)
// must not be readable by group or others. Errors name the file, never a
// key.
func LoadIdentities(uri string) ([]age.Identity, error) {
	path, ok := strings.CutPrefix(uri, "file:")
	if !ok {
		if scheme, _, found := strings.Cut(uri, ":"); found && !strings.ContainsAny(scheme, "/.") {
			return nil, fmt.Errorf("identity %q: unknown key URI scheme %q (supported: file:PATH)", uri, scheme)
		}
		path = uri
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("identity file %s is mode %04o: it must be readable by its owner only (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		// age's parse errors may quote the offending line: say only where.
		return nil, fmt.Errorf("identity file %s holds no valid age X25519 identity (AGE-SECRET-KEY-1… lines, as age-keygen writes)", path)
	}
	if len(ids) == 0 {
		return nil, errors.New("identity file " + path + " holds no identity")
	}
	return ids, nil
}
