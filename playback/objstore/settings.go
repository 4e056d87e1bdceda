package objstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"
)

// Settings are an s3 section of config.yaml (recordings.s3 of
// sshward-playback, audit.archive.s3 of sshward-ca). The secret key is
// never in the file: SecretKeyFile names the file (0600) that holds it,
// else $SSHWARD_S3_SECRET_KEY.
type Settings struct {
	Endpoint      string `yaml:"endpoint"`
	Bucket        string `yaml:"bucket"`
	Prefix        string `yaml:"prefix"`
	Region        string `yaml:"region"`
	AccessKey     string `yaml:"access_key"`
	SecretKeyFile string `yaml:"secret_key_file"`
	CAFile        string `yaml:"ca_file"`
	VirtualHosted bool   `yaml:"virtual_hosted"`
}

// Check reports a section missing what Open needs; section names it in
// the message (e.g. "recordings.s3").
func (s *Settings) Check(section string) error {
	switch {
	case s.Endpoint == "" || s.Bucket == "" || s.AccessKey == "":
		return fmt.Errorf("%s needs endpoint, bucket and access_key", section)
	case !strings.HasPrefix(s.Endpoint, "https://") && !strings.HasPrefix(s.Endpoint, "http://"):
		return fmt.Errorf("%s.endpoint %q must be an http(s) URL", section, s.Endpoint)
	}
	return nil
}

// OpenSettings opens the bucket of s (section names it in errors), or
// returns nil when s is nil.
func OpenSettings(ctx context.Context, s3 *Settings, section string, log *slog.Logger) (*Bucket, error) {
	if s3 == nil {
		return nil, nil
	}
	secret := os.Getenv("SSHWARD_S3_SECRET_KEY")
	if s3.SecretKeyFile != "" {
		fi, err := os.Stat(s3.SecretKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.secret_key_file: %w", section, err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%s.secret_key_file %s is readable by others (mode %v): chmod 600 it", section, s3.SecretKeyFile, fi.Mode().Perm())
		}
		b, err := os.ReadFile(s3.SecretKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.secret_key_file: %w", section, err)
		}
		secret = strings.TrimSpace(string(b))
	}
	if secret == "" {
		return nil, fmt.Errorf("%s: no secret key: set secret_key_file or $SSHWARD_S3_SECRET_KEY", section)
	}
	hc := &http.Client{Timeout: 5 * time.Minute}
	if s3.CAFile != "" {
		pem, err := os.ReadFile(s3.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.ca_file: %w", section, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.ca_file %s holds no PEM certificate", section, s3.CAFile)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return Open(octx, Config{Endpoint: s3.Endpoint, Bucket: s3.Bucket, Prefix: s3.Prefix, Region: s3.Region,
		AccessKey: s3.AccessKey, SecretKey: secret, VirtualHosted: s3.VirtualHosted, HTTPClient: hc, Logger: log})
}
