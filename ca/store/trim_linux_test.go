package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// mappedRSSKiB is the resident size of this process's mapping of path, from
// /proc/self/smaps.
func mappedRSSKiB(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatalf("cannot read /proc/self/smaps (is /proc mounted?): %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in, total := false, 0
	for sc.Scan() {
		line := sc.Text()
		if fs := strings.Fields(line); len(fs) >= 5 && strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":") {
			in = strings.HasSuffix(line, " "+path)
			continue
		}
		if in && strings.HasPrefix(line, "Rss:") {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			total += n
		}
	}
	return total
}

// TestDropMappedPagesKeepsData: after the store's pages were read through
// the mapping, dropping them empties the mapping's resident set, and every
// record still reads back, also for readers running while pages are
// dropped over and over.
func TestDropMappedPagesKeepsData(t *testing.T) {
	db := openTemp(t, Options{})
	ctx := context.Background()
	const n = 3000
	now := time.Unix(1_700_000_000, 0).UTC()
	for i := 0; i < n; i += 100 {
		if err := db.Update(ctx, func(tx *Tx) error {
			for j := i; j < i+100; j++ {
				c := &CertRecord{Serial: uint64(j + 1), KeyID: fmt.Sprintf("user%d@local tier=staging", j), Kind: CertKindUser,
					ValidAfter: now, ValidBefore: now.Add(time.Hour), IssuedAt: now}
				if err := tx.PutCert(c); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	readAll := func() error {
		return db.View(ctx, func(tx *Tx) error {
			for j := range n {
				c, err := tx.GetCert(uint64(j + 1))
				if err != nil {
					return err
				}
				if want := fmt.Sprintf("user%d@local tier=staging", j); c.KeyID != want {
					return fmt.Errorf("serial %d: key id %q, want %q", j+1, c.KeyID, want)
				}
			}
			return nil
		})
	}
	if err := readAll(); err != nil {
		t.Fatal(err)
	}
	before := mappedRSSKiB(t, db.Path())
	db.dropMappedPages()
	after := mappedRSSKiB(t, db.Path())
	t.Logf("mapped store pages resident: %d KiB, then %d KiB", before, after)
	if before < 64 || after > before/4 {
		t.Errorf("mapped store pages resident: %d KiB after reading everything, %d KiB after dropping them", before, after)
	}

	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				db.dropMappedPages()
			}
		}
	})
	for range 5 {
		if err := readAll(); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	if db.trims.Load() < 2 {
		t.Errorf("trims = %d", db.trims.Load())
	}
}
