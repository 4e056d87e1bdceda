package webhook

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
)

// ConfigFromArgs builds the plugin's Config from its command line, with
// the environment as fallback (the CA passes either, from its config.yaml):
//
//	--url URL            or $SSHWARD_WEBHOOK_URL           required
//	--secret-file FILE   or $SSHWARD_WEBHOOK_SECRET_FILE   required; mode 0600 or stricter
//	--timeout D          per request (default 10s)
//	--attempts N         per event and Notify call (default 3)
//
// The secret is the file's content without a trailing newline. The URL
// is taken from flags or environment rather than a file because it is not
// meant to be secret; services that put a token in the URL path should use
// an env entry in config.yaml, which the CA keeps 0600.
func ConfigFromArgs(args []string, getenv func(string) string) (Config, error) {
	fs := flag.NewFlagSet("sshward-plugin-webhook", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	u := fs.String("url", getenv("SSHWARD_WEBHOOK_URL"), "receiver URL")
	secretFile := fs.String("secret-file", getenv("SSHWARD_WEBHOOK_SECRET_FILE"), "file holding the HMAC secret")
	timeout := fs.Duration("timeout", DefaultTimeout, "timeout per request")
	attempts := fs.Int("attempts", DefaultAttempts, "attempts per event")
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("webhook: %w", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("webhook: unexpected argument %q", fs.Arg(0))
	}
	if *u == "" {
		return Config{}, errors.New("webhook: --url (or SSHWARD_WEBHOOK_URL) is required")
	}
	if *secretFile == "" {
		return Config{}, errors.New("webhook: --secret-file (or SSHWARD_WEBHOOK_SECRET_FILE) is required")
	}
	if *timeout <= 0 || *attempts <= 0 {
		return Config{}, errors.New("webhook: --timeout and --attempts must be positive")
	}
	secret, err := readSecret(*secretFile)
	if err != nil {
		return Config{}, err
	}
	return Config{URL: *u, Secret: secret, Attempts: *attempts, Client: &http.Client{Timeout: *timeout}}, nil
}

// readSecret reads a secret file that only its owner can read.
func readSecret(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("webhook: secret file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("webhook: secret file %s is readable by others (mode %#o): chmod 600 it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("webhook: secret file: %w", err)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) < MinSecretBytes {
		return nil, fmt.Errorf("webhook: secret file %s holds fewer than %d bytes", path, MinSecretBytes)
	}
	return b, nil
}
