package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/sshward/sshward/ca/store"
)

// storeConfig is config.yaml's store section. Empty: the bbolt file
// DIR/ca.db. With etcd set, the CA's state lives in that cluster and any
// number of sshward-ca serve replicas (each with a copy of the CA
// directory: keys, TLS root, config) share it.
type storeConfig struct {
	Etcd *etcdStoreConfig `yaml:"etcd"`
}

type etcdStoreConfig struct {
	Endpoints []string `yaml:"endpoints"` // http(s)://HOST:2379 of every member
	Prefix    string   `yaml:"prefix"`    // default "sshward"; one per CA on a shared cluster
	TLS       struct {
		CA   string `yaml:"ca"`   // PEM bundle that verifies the members
		Cert string `yaml:"cert"` // client certificate, when the cluster asks for one
		Key  string `yaml:"key"`
	} `yaml:"tls"` // paths relative to the CA directory
	MaxTxnOps int `yaml:"max_txn_ops"` // the members' --max-txn-ops; default 128
	// CertKeep: how long a certificate record stays after the certificate
	// expires (default 720h); ExpiryGrace: how long sessions, claims, join
	// tokens and used ID tokens stay after theirs (default 1h).
	CertKeep    string `yaml:"cert_keep"`
	ExpiryGrace string `yaml:"expiry_grace"`
}

// durations parses cert_keep and expiry_grace (zero when unset).
func (e *etcdStoreConfig) durations() (keep, grace time.Duration, err error) {
	for _, f := range []struct {
		name, v string
		d       *time.Duration
	}{{"cert_keep", e.CertKeep, &keep}, {"expiry_grace", e.ExpiryGrace, &grace}} {
		if f.v == "" {
			continue
		}
		d, perr := time.ParseDuration(f.v)
		if perr != nil || d < time.Second {
			return 0, 0, fmt.Errorf("config.yaml: store.etcd.%s %q must be a duration of at least 1s", f.name, f.v)
		}
		*f.d = d
	}
	return keep, grace, nil
}

// errBackupEtcd is sshward-ca backup's answer for a CA on etcd.
var errBackupEtcd = errors.New("this CA keeps its state on etcd, which sshward-ca backup cannot copy: back up the cluster with `etcdctl snapshot save FILE` and the CA directory (keys, config) with your file backups")

func (c *config) checkStore() error {
	if e := c.Store.Etcd; e != nil {
		if len(e.Endpoints) == 0 {
			return errors.New("config.yaml: store.etcd.endpoints is empty: list the etcd members' client URLs")
		}
		if _, _, err := e.durations(); err != nil {
			return err
		}
	}
	return nil
}

// storeOptions are the store.Options for this CA directory's config.
func (l layout) storeOptions(cfg *config) store.Options {
	e := cfg.Store.Etcd
	if e == nil {
		return store.Options{Path: l.db()}
	}
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(l.dir, p)
	}
	keep, grace, _ := e.durations() // checked by checkStore
	return store.Options{Etcd: &store.EtcdOptions{Endpoints: e.Endpoints, Prefix: e.Prefix,
		CA: rel(e.TLS.CA), Cert: rel(e.TLS.Cert), Key: rel(e.TLS.Key), MaxTxnOps: e.MaxTxnOps,
		CertKeep: keep, ExpiryGrace: grace}}
}

// openStore opens the store config.yaml names (the bbolt file by default).
// inUse is the message for a locked file.
func openStore(ctx context.Context, l layout, log *slog.Logger, openTimeout time.Duration) (*store.DB, error) {
	cfg, err := loadConfig(l.config())
	if err != nil {
		return nil, err
	}
	if err := cfg.checkStore(); err != nil {
		return nil, err
	}
	o := l.storeOptions(cfg)
	o.Logger, o.OpenTimeout = log, openTimeout
	if o.Etcd != nil {
		// A cluster that does not answer should say so, not hang.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	db, err := store.Open(ctx, o)
	if err != nil && o.Etcd != nil && !errors.Is(err, store.ErrSchema) {
		return nil, fmt.Errorf("the CA store on etcd (%v) does not answer: check store.etcd in %s and that the cluster is up: %w", o.Etcd.Endpoints, l.config(), err)
	}
	return db, err
}
