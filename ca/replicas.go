package ca

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/sshward/sshward/ca/store"
)

// The trust bundle names the replicas. Every sshward-ca serve registers the
// URL it is reached at (serve --advertise) in the shared store when it
// starts, and every playback server joining adds its URL; GET /v1/trust
// lists both (ca_replicas, playback_replicas), so a client or agent
// configured with one CA URL learns the others and fails over to them
// (ca/client LearnReplicas). A replica that is gone for good stays listed
// until an operator removes it (it is only tried last once it fails: the
// client marks it down).

// Store meta keys of the replica lists (JSON arrays of URLs).
const (
	metaCAReplicas       = "ca_replicas"
	metaPlaybackReplicas = "playback_replicas"
)

// maxReplicas bounds each list: a new URL beyond it pushes the oldest out.
const maxReplicas = 32

// RegisterReplica adds url to the CA replicas the trust bundle names.
func (a *Authority) RegisterReplica(ctx context.Context, url string) error {
	url = strings.TrimRight(strings.TrimSpace(url), "/")
	if url == "" {
		return nil
	}
	err := a.cfg.Store.Update(ctx, func(tx *store.Tx) error { return addReplica(tx, metaCAReplicas, url) })
	if err != nil {
		return fmt.Errorf("ca: register replica %s: %w", url, err)
	}
	return nil
}

// addReplica adds url to the list under key (last, most recent), in tx.
func addReplica(tx *store.Tx, key, url string) error {
	list, err := replicaList(tx, key)
	if err != nil {
		return err
	}
	if i := slices.Index(list, url); i >= 0 {
		return nil
	}
	list = append(list, url)
	if len(list) > maxReplicas {
		list = list[len(list)-maxReplicas:]
	}
	b, err := json.Marshal(list)
	if err != nil {
		return err
	}
	return tx.PutMeta(key, b)
}

func replicaList(tx *store.Tx, key string) ([]string, error) {
	b, err := tx.GetMeta(key)
	if errors.Is(err, store.ErrNotFound) || (err == nil && len(b) == 0) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("store meta %s: %w", key, err)
	}
	return list, nil
}

// Replicas returns the CA and playback replica URLs the store knows (nil
// when it cannot be read: the trust bundle is served without them).
func (a *Authority) Replicas(ctx context.Context) (caURLs, playbackURLs []string) {
	_ = a.cfg.Store.View(ctx, func(tx *store.Tx) error {
		caURLs, _ = replicaList(tx, metaCAReplicas)
		playbackURLs, _ = replicaList(tx, metaPlaybackReplicas)
		return nil
	})
	return caURLs, playbackURLs
}
