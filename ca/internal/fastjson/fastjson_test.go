package fastjson_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/internal/fastjson"
)

// samples that exercise every escape encoding/json knows.
var samples = []string{
	"", "alice", `quote " backslash \ slash /`, "<script>&amp;</script>", "tab\tnl\nlf\rff\fbs\b",
	"\x00\x01\x1f\x7f", "héllo wörld ✓ 🙂", "line\u2028sep\u2029para", "bad \xff\xfe utf8 \xc3", "\xed\xa0\x80 surrogate",
	"alice@local tier=staging req=- serial=1846392837462", "SHA256:abc+/def=",
}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range samples {
		if got, want := fastjson.String(nil, s), marshal(t, s); !bytes.Equal(got, want) {
			t.Errorf("String(%q) = %s, encoding/json writes %s", s, got, want)
		}
	}
}

func TestStringsAndMapMatchEncodingJSON(t *testing.T) {
	for _, ss := range [][]string{nil, {}, {"a"}, samples} {
		if got, want := fastjson.Strings(nil, ss), marshal(t, ss); !bytes.Equal(got, want) {
			t.Errorf("Strings(%q) = %s, want %s", ss, got, want)
		}
	}
	big := map[string]string{}
	for i, s := range samples {
		big[s] = samples[len(samples)-1-i]
	}
	for _, m := range []map[string]string{nil, {}, {"k": "v"}, big} {
		if got, want := fastjson.StringMap(nil, m), marshal(t, m); !bytes.Equal(got, want) {
			t.Errorf("StringMap(%q) = %s, want %s", m, got, want)
		}
	}
}

func TestTimeMatchesEncodingJSON(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	odd := time.FixedZone("odd", 3600+30) // seconds in the offset are dropped
	far := time.FixedZone("far", 25*3600) // MarshalJSON refuses
	base := time.Unix(1_700_000_000, 123_456_789)
	for _, tm := range []time.Time{{}, base, base.UTC(), base.In(cet), base.Truncate(time.Second).UTC(),
		base.Truncate(time.Millisecond), time.Date(9999, 12, 31, 23, 59, 59, 999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), base.In(odd), base.In(far), time.Date(-10000, 1, 1, 0, 0, 0, 0, time.UTC)} {
		want, err := json.Marshal(tm)
		got, ok := fastjson.Time(nil, tm)
		if ok != (err == nil) {
			t.Errorf("Time(%v): ok=%v, encoding/json err=%v", tm, ok, err)
			continue
		}
		if ok && !bytes.Equal(got, want) {
			t.Errorf("Time(%v) = %s, want %s", tm, got, want)
		}
	}
}

func FuzzString(f *testing.F) {
	for _, s := range samples {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, s, k string) {
		if got, want := fastjson.String(nil, s), marshal(t, s); !bytes.Equal(got, want) {
			t.Fatalf("String(%q) = %s, encoding/json writes %s", s, got, want)
		}
		m := map[string]string{k: s, s: k, "": ""}
		if got, want := fastjson.StringMap([]byte("x"), m), append([]byte("x"), marshal(t, m)...); !bytes.Equal(got, want) {
			t.Fatalf("StringMap(%q) = %s, want %s", m, got, want)
		}
	})
}
