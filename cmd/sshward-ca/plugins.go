package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/notify"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/plugins"
)

// pluginConfig is one entry of config.yaml's plugins section.
type pluginConfig struct {
	Name   string            `yaml:"name"`
	Kind   string            `yaml:"kind"`   // notifier or approval
	Path   string            `yaml:"path"`   // absolute, or relative to the CA directory
	SHA256 string            `yaml:"sha256"` // sha256sum of the binary
	Args   []string          `yaml:"args"`
	Env    map[string]string `yaml:"env"` // the plugin's whole environment (the CA's is not passed on)
}

// pluginSet is what serve runs from the plugins section: the approval
// policy for ca.Config and the notifier dispatcher.
type pluginSet struct {
	clients    []*plugins.Client
	approval   ca.ApprovalPolicy  // nil without approval plugins
	dispatcher *notify.Dispatcher // nil without notifiers
}

// startPlugins starts every configured plugin. Any failure — a SHA-256
// mismatch above all — stops the ones already started and is returned:
// serve refuses to start rather than run without a configured gate or
// notifier.
func startPlugins(ctx context.Context, dir string, cfgs []pluginConfig, db *store.DB, log *slog.Logger) (_ *pluginSet, err error) {
	ps := &pluginSet{}
	defer func() {
		if err != nil {
			ps.close()
		}
	}()
	var approvals plugins.AllOf
	var targets []notify.Target
	seen := map[string]bool{}
	for i, pc := range cfgs {
		if seen[pc.Name] {
			return nil, fmt.Errorf("config.yaml plugins[%d]: the name %q is used twice", i, pc.Name)
		}
		seen[pc.Name] = true
		path := pc.Path
		if path != "" && !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
		keys := make([]string, 0, len(pc.Env))
		for k := range pc.Env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		env := make([]string, 0, len(keys))
		for _, k := range keys {
			env = append(env, k+"="+pc.Env[k])
		}
		c, err := plugins.Load(ctx, plugins.Config{
			Name: pc.Name, Kind: plugins.Kind(pc.Kind), Path: path, SHA256: pc.SHA256,
			Args: pc.Args, Env: env, Logger: log,
		})
		if err != nil {
			// The error names the plugin; a checksum mismatch names both
			// digests, so the operator can tell a stale pin from a swap.
			return nil, fmt.Errorf("config.yaml plugins[%d]: %w", i, err)
		}
		ps.clients = append(ps.clients, c)
		switch c.Kind() {
		case plugins.KindApproval:
			approvals = append(approvals, c)
		case plugins.KindNotifier:
			targets = append(targets, notify.Target{Name: c.Name(), Notifier: c})
		}
		log.Info("plugin ready", "plugin", pc.Name, "kind", pc.Kind, "path", path)
	}
	switch len(approvals) {
	case 0:
	case 1:
		ps.approval = approvals[0]
	default:
		ps.approval = approvals // all must allow
	}
	if len(targets) > 0 {
		if ps.dispatcher, err = notify.New(notify.Config{Store: db, Targets: targets, Logger: log}); err != nil {
			return nil, err
		}
	}
	return ps, nil
}

// run delivers audit events to the notifiers until ctx ends.
func (ps *pluginSet) run(ctx context.Context) error {
	if ps.dispatcher == nil {
		return nil
	}
	return ps.dispatcher.Run(ctx)
}

// close stops every plugin process; CleanupClients then catches any that
// a restart left behind. Called once, deferred by serve.
func (ps *pluginSet) close() {
	for _, c := range ps.clients {
		c.Close()
	}
	plugins.CleanupClients()
}
