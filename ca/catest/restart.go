package catest

import (
	"net/url"
	"testing"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
	"github.com/sshward/sshward/ca/tlsca"
)

// running is what a test CA needs to start again.
type running struct {
	o    Options
	root *tlsca.Root
	box  *ca.SecretBox
	stop func() // stops the server and loops; idempotent
}

// Stop stops the CA as its process ending would: the HTTPS server and the
// on-call loop end, the store file is closed. Start brings it back.
func (c *CA) Stop(t testing.TB) {
	t.Helper()
	c.run.stop()
	if err := c.Store.Close(); err != nil {
		t.Fatalf("catest: close store: %v", err)
	}
}

// Start starts a stopped CA again on the same address, with the same keys,
// TLS root and policy, from its store file: what a restarted sshward-ca
// finds. Clients and agents pinned to it reconnect by themselves.
func (c *CA) Start(t testing.TB) {
	t.Helper()
	u, err := url.Parse(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	c.Store = storetest.MustOpenWith(t, store.Options{Path: c.Store.Path()})
	c.start(t, u.Host)
}
