package server

import (
	"net/http"
	"strconv"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/internal/fastjson"
)

// appendCertResponse appends r as encoding/json writes it, without
// reflection: POST /v1/cert answers with it on every issuance
// (certjson_test.go compares the bytes). ok is false when a time cannot be
// encoded; writeJSON then reports the error as encoding/json does.
func appendCertResponse(dst []byte, r *api.CertResponse) ([]byte, bool) {
	b := append(dst, `{"certificate":`...)
	b = fastjson.String(b, r.Certificate)
	b = append(b, `,"serial":`...)
	b = fastjson.Uint(b, r.Serial)
	b = append(b, `,"key_id":`...)
	b = fastjson.String(b, r.KeyID)
	b = append(b, `,"tier":`...)
	b = fastjson.String(b, r.Tier)
	b = append(b, `,"principals":`...)
	b = fastjson.Strings(b, r.Principals)
	b = append(b, `,"valid_after":`...)
	b, ok1 := fastjson.Time(b, r.ValidAfter)
	b = append(b, `,"valid_before":`...)
	b, ok2 := fastjson.Time(b, r.ValidBefore)
	return append(b, '}'), ok1 && ok2
}

// writeCertResponse is writeJSON(w, http.StatusOK, r) for the issuance hot path.
func writeCertResponse(w http.ResponseWriter, r *api.CertResponse) {
	b, ok := appendCertResponse(make([]byte, 0, 256+len(r.Certificate)+len(r.KeyID)), r)
	if !ok {
		writeJSON(w, http.StatusOK, r)
		return
	}
	b = append(b, '\n')
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}
