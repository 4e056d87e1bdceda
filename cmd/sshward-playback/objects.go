package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/playback/objstore"
)

// openObjects opens the bucket of recordings.s3, or returns nil without
// one. The secret key comes from secret_key_file or $SSHWARD_S3_SECRET_KEY,
// never from config.yaml.
func openObjects(ctx context.Context, s3 *playback.S3Settings, log *slog.Logger) (*objstore.Bucket, error) {
	if s3 == nil {
		return nil, nil
	}
	secret := os.Getenv("SSHWARD_S3_SECRET_KEY")
	if s3.SecretKeyFile != "" {
		fi, err := os.Stat(s3.SecretKeyFile)
		if err != nil {
			return nil, fmt.Errorf("recordings.s3.secret_key_file: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("recordings.s3.secret_key_file %s is readable by others (mode %v): chmod 600 it", s3.SecretKeyFile, fi.Mode().Perm())
		}
		b, err := os.ReadFile(s3.SecretKeyFile)
		if err != nil {
			return nil, fmt.Errorf("recordings.s3.secret_key_file: %w", err)
		}
		secret = strings.TrimSpace(string(b))
	}
	if secret == "" {
		return nil, errors.New("recordings.s3: no secret key: set secret_key_file or $SSHWARD_S3_SECRET_KEY")
	}
	hc := &http.Client{Timeout: 5 * time.Minute}
	if s3.CAFile != "" {
		pem, err := os.ReadFile(s3.CAFile)
		if err != nil {
			return nil, fmt.Errorf("recordings.s3.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("recordings.s3.ca_file %s holds no PEM certificate", s3.CAFile)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return objstore.Open(octx, objstore.Config{Endpoint: s3.Endpoint, Bucket: s3.Bucket, Prefix: s3.Prefix, Region: s3.Region,
		AccessKey: s3.AccessKey, SecretKey: secret, VirtualHosted: s3.VirtualHosted, HTTPClient: hc, Logger: log})
}
