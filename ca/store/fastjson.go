package store

import (
	"encoding/json"
	"time"

	"github.com/sshward/sshward/ca/internal/fastjson"
)

// jsonAppender is implemented by the records written on every issuance
// (CertRecord; AuditEvent has appendAuditJSON): putJSON encodes them
// without reflection. The
// bytes are those encoding/json writes (fastjson_test.go compares them), so
// readers and older files are unaffected. ok is false for a value only
// encoding/json can judge (a time it cannot encode): marshalRecord then
// uses encoding/json, which reports the error.
type jsonAppender interface {
	appendJSON(dst []byte) (_ []byte, ok bool)
}

// marshalRecord is json.Marshal, without reflection for a jsonAppender.
func marshalRecord(v any) ([]byte, error) {
	var b []byte
	ok := false
	switch r := v.(type) {
	case jsonAppender:
		b, ok = r.appendJSON(make([]byte, 0, 512))
	case *AuditEvent: // plugins/contract's type: no methods of ours
		b, ok = appendAuditJSON(make([]byte, 0, 512), r)
	}
	if ok {
		return b, nil
	}
	return json.Marshal(v)
}

// jsonObject appends one JSON object's members; ok turns false for good
// once a time cannot be encoded.
type jsonObject struct {
	b     []byte
	first bool
	ok    bool
}

func newObject(dst []byte) jsonObject {
	return jsonObject{b: append(dst, '{'), first: true, ok: true}
}

func (o *jsonObject) key(k string) {
	if !o.first {
		o.b = append(o.b, ',')
	}
	o.first = false
	o.b = append(o.b, '"')
	o.b = append(o.b, k...)
	o.b = append(o.b, '"', ':')
}

func (o *jsonObject) str(k, v string) { o.key(k); o.b = fastjson.String(o.b, v) }

// strOmitZero is a string field tagged omitzero (or omitempty).
func (o *jsonObject) strOmitZero(k, v string) {
	if v != "" {
		o.str(k, v)
	}
}

func (o *jsonObject) uint(k string, v uint64) { o.key(k); o.b = fastjson.Uint(o.b, v) }

func (o *jsonObject) time(k string, t time.Time) {
	o.key(k)
	var ok bool
	o.b, ok = fastjson.Time(o.b, t)
	o.ok = o.ok && ok
}

func (o *jsonObject) end() ([]byte, bool) { return append(o.b, '}'), o.ok }

func (c *CertRecord) appendJSON(dst []byte) ([]byte, bool) {
	o := newObject(dst)
	o.uint("serial", c.Serial)
	o.str("key_id", c.KeyID)
	o.str("kind", c.Kind)
	o.strOmitZero("tier", c.Tier)
	o.strOmitZero("identity", c.Identity)
	if len(c.Principals) > 0 {
		o.key("principals")
		o.b = fastjson.Strings(o.b, c.Principals)
	}
	o.time("valid_after", c.ValidAfter)
	o.time("valid_before", c.ValidBefore)
	o.time("issued_at", c.IssuedAt)
	o.strOmitZero("public_key_fp", c.PublicKeyFP)
	o.strOmitZero("request_id", c.RequestID)
	o.strOmitZero("client_addr", c.ClientAddr)
	return o.end()
}

func appendAuditJSON(dst []byte, ev *AuditEvent) ([]byte, bool) {
	o := newObject(dst)
	o.uint("seq", ev.Seq)
	o.time("time", ev.Time)
	o.str("type", ev.Type)
	o.strOmitZero("actor", ev.Actor)
	o.strOmitZero("subject", ev.Subject)
	o.strOmitZero("tier", ev.Tier)
	if ev.Serial != 0 {
		o.uint("serial", ev.Serial)
	}
	o.strOmitZero("key_id", ev.KeyID)
	o.strOmitZero("request_id", ev.RequestID)
	o.strOmitZero("client_addr", ev.ClientAddr)
	o.str("outcome", ev.Outcome)
	o.strOmitZero("reason", ev.Reason)
	if len(ev.Details) > 0 {
		o.key("details")
		o.b = fastjson.StringMap(o.b, ev.Details)
	}
	o.str("prev_hash", ev.PrevHash)
	o.str("hash", ev.Hash)
	return o.end()
}
