package krl

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"fmt"
	"math"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
)

// canonical is the normal form Marshal encodes from and Parse decodes into:
// one entry per distinct CA in first-seen order, each with sorted, disjoint,
// non-adjacent serial runs and sorted unique key IDs, plus sorted unique key
// hashes. Two KRLs that revoke the same things have the same canonical form,
// so Marshal(Parse(b)) is stable.
type canonical struct {
	version uint64
	date    uint64
	comment string
	cas     []canonicalCA
	hashes  [][sha256.Size]byte
}

type canonicalCA struct {
	ca   ssh.PublicKey // nil for the wildcard section
	blob []byte        // ca.Marshal(); empty for the wildcard section
	runs []SerialRange
	ids  []string
}

// canonicalize validates k and returns its canonical form without modifying
// k or the slices it refers to.
func (k *KRL) canonicalize() (*canonical, error) {
	c := &canonical{version: k.Version, comment: k.Comment}
	if strings.IndexByte(k.Comment, 0) >= 0 {
		// krl.c reads the comment with sshbuf_get_cstring, which refuses NUL.
		return nil, invalid("comment contains a NUL byte")
	}
	if !k.GeneratedAt.IsZero() {
		secs := k.GeneratedAt.Unix()
		if secs < 0 {
			return nil, invalid("generated date %s is before 1970", k.GeneratedAt.UTC().Format("2006-01-02"))
		}
		c.date = uint64(secs)
	}

	index := make(map[string]int)
	for i, s := range k.CAs {
		var blob []byte
		if s.CA != nil {
			if _, ok := s.CA.(*ssh.Certificate); ok {
				return nil, invalid("CAs[%d]: CA is a certificate, not a plain key", i)
			}
			blob = s.CA.Marshal()
		}
		j, ok := index[string(blob)]
		if !ok {
			j = len(c.cas)
			index[string(blob)] = j
			c.cas = append(c.cas, canonicalCA{ca: s.CA, blob: blob})
		}
		cc := &c.cas[j]
		for _, n := range s.Serials {
			if n == 0 {
				return nil, invalid("CAs[%d]: serial 0 cannot be revoked by serial; revoke its key ID", i)
			}
			cc.runs = append(cc.runs, SerialRange{n, n})
		}
		for _, r := range s.Ranges {
			if r.First == 0 || r.First > r.Last {
				return nil, invalid("CAs[%d]: serial range %d-%d is empty or includes 0", i, r.First, r.Last)
			}
			cc.runs = append(cc.runs, r)
		}
		for _, id := range s.KeyIDs {
			if strings.IndexByte(id, 0) >= 0 {
				return nil, invalid("CAs[%d]: key ID %q contains a NUL byte", i, id)
			}
			cc.ids = append(cc.ids, id)
		}
	}
	for i := range c.cas {
		c.cas[i].runs = mergeRuns(c.cas[i].runs)
		c.cas[i].ids = sortedUnique(c.cas[i].ids, strings.Compare)
	}

	for i, key := range k.Keys {
		if key == nil {
			return nil, invalid("Keys[%d] is nil", i)
		}
		if _, ok := key.(*ssh.Certificate); ok {
			// PROTOCOL.krl section 3/4: only raw keys. Revoking by the cert's
			// key would also revoke every other certificate of that key.
			return nil, invalid("Keys[%d] is a certificate; revoke certificates by serial or key ID", i)
		}
		c.hashes = append(c.hashes, sha256.Sum256(key.Marshal()))
	}
	c.hashes = append(c.hashes, k.KeySHA256...)
	c.hashes = sortedUnique(c.hashes, func(a, b [sha256.Size]byte) int { return bytes.Compare(a[:], b[:]) })
	return c, nil
}

// toKRL returns the KRL Parse reports for c: isolated serials in Serials,
// runs of two or more in Ranges, nil for every empty list.
func (c *canonical) toKRL() *KRL {
	k := &KRL{Version: c.version, Comment: c.comment}
	if c.date != 0 {
		k.GeneratedAt = unixUTC(c.date)
	}
	for _, cc := range c.cas {
		s := CertSection{CA: cc.ca, KeyIDs: cc.ids}
		for _, r := range cc.runs {
			if r.First == r.Last {
				s.Serials = append(s.Serials, r.First)
			} else {
				s.Ranges = append(s.Ranges, r)
			}
		}
		k.CAs = append(k.CAs, s)
	}
	k.KeySHA256 = c.hashes
	return k
}

// mergeRuns sorts runs and coalesces overlapping and adjacent ones, as
// krl.c's insert_serial_range does. It reuses the backing array of runs.
func mergeRuns(runs []SerialRange) []SerialRange {
	if len(runs) == 0 {
		return nil
	}
	slices.SortFunc(runs, func(a, b SerialRange) int { return cmp.Compare(a.First, b.First) })
	out := runs[:1]
	for _, r := range runs[1:] {
		last := &out[len(out)-1]
		if last.Last == math.MaxUint64 || r.First <= last.Last+1 {
			last.Last = max(last.Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}

// sortedUnique sorts s in place and drops duplicates; nil when empty.
func sortedUnique[T any](s []T, compare func(a, b T) int) []T {
	if len(s) == 0 {
		return nil
	}
	slices.SortFunc(s, compare)
	return slices.CompactFunc(s, func(a, b T) bool { return compare(a, b) == 0 })
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("krl: marshal: %s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}
