package glewlwydtest

import (
	"testing"
	"time"
)

func TestTiming(t *testing.T) {
	start := time.Now()
	t.Run("x", func(t *testing.T) {
		p := Start(t, Options{})
		t.Logf("started in %s", time.Since(start))
		p.AddUser(t, "alice", "pw", []string{"a"}, true)
		t.Logf("user in %s", time.Since(start))
		t.Cleanup(func() { t.Logf("cleanup start %s", time.Since(start)) })
	})
	t.Logf("done in %s", time.Since(start))
}
