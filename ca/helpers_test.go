package ca_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"testing"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/tlsca"
)

func revokeSerial(s uint64) ca.RevokeRequest { return ca.RevokeRequest{Serial: s, Reason: "test"} }
func revokeKeyID(k string) ca.RevokeRequest  { return ca.RevokeRequest{KeyID: k, Reason: "test"} }

func defaultPolicy(t *testing.T) []byte { t.Helper(); return policy.Default() }

func itoa(u uint64) string { return strconv.FormatUint(u, 10) }

func asAPIError(err error, out **api.Error) bool { return errors.As(err, out) }

// countCerts counts certificate records in the store.
func countCerts(t *testing.T, w *world) int {
	t.Helper()
	n := 0
	err := w.ca.Store.View(context.Background(), func(tx *store.Tx) error {
		recs, err := tx.ListCerts(store.CertFilter{})
		n = len(recs)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// pinnedHTTP is a raw HTTP client trusting the test CA's root.
func pinnedHTTP(t *testing.T, w *world) *http.Client {
	t.Helper()
	tc, err := tlsca.ClientConfigFromPEM(w.ca.RootPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
}

func mustPub(t *testing.T, w *world) string {
	t.Helper()
	_, pub := keyPair(t, w.dir, "any")
	return pub
}

func storeFilter(typ string) store.AuditFilter { return store.AuditFilter{Type: typ} }

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
