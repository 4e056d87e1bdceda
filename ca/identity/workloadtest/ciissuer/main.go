// Command ciissuer is a CI token issuer for tests (issue 12 §1): OpenID
// Connect discovery, a JWKS, and ES256 tokens with GitHub-Actions-like
// claims, on loopback. It is not glewlwyd because glewlwyd's
// client-credentials grant cannot give a CI job's claims: tried on
// 2026-12-05 with glewlwyd 2.7.5, the grant was refused ("grant_type
// client_credentials unauthorized") even with auth-type-client-enabled and a
// client allowed client_credentials, and its client backend drops custom
// properties (repository, ref were not stored), while its custom claims
// come only from user properties, which a client-credentials token has none
// of. A CI platform's token names the repository, ref, environment and run
// of the job; only an issuer we write can mint those.
//
// Endpoints:
//
//	GET  /.well-known/openid-configuration
//	GET  /jwks
//	GET  /token?aud=A&repository=R&ref=…&environment=…&workflow=…&run_id=…
//	          [&iss=override][&iat=-1m][&exp=5m][&jti=J][&kid=unknown]
//	POST /rotate    new signing key, published in /jwks; tokens use it
//
// iat and exp are offsets from now. kid=unknown signs with a key the JWKS
// never holds (a forger's). It prints "listening URL" and serves until
// killed.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

type issuer struct {
	url string

	mu   sync.Mutex
	keys []jose.JSONWebKey // private; the last one signs
}

func newKey(kid string) jose.JSONWebKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	return jose.JSONWebKey{Key: k, KeyID: kid, Algorithm: "ES256", Use: "sig"}
}

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	is := &issuer{url: "http://" + ln.Addr().String(), keys: []jose.JSONWebKey{newKey("k1")}}
	forger := newKey("unknown")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"issuer": is.url, "jwks_uri": is.url + "/jwks", "id_token_signing_alg_values_supported": []string{"ES256"},
			"response_types_supported": []string{"id_token"}, "subject_types_supported": []string{"public"}})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		defer is.mu.Unlock()
		set := jose.JSONWebKeySet{}
		for _, k := range is.keys {
			set.Keys = append(set.Keys, k.Public())
		}
		writeJSON(w, set)
	})
	mux.HandleFunc("POST /rotate", func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		defer is.mu.Unlock()
		is.keys = append(is.keys, newKey(fmt.Sprintf("k%d", len(is.keys)+1)))
		writeJSON(w, map[string]string{"kid": is.keys[len(is.keys)-1].KeyID})
	})
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		now := time.Now()
		off := func(name string, def time.Duration) int64 {
			if s := q.Get(name); s != "" {
				d, err := time.ParseDuration(s)
				if err == nil {
					return now.Add(d).Unix()
				}
			}
			return now.Add(def).Unix()
		}
		var b [12]byte
		rand.Read(b[:])
		claims := map[string]any{
			"iss": is.url, "aud": q.Get("aud"), "jti": hex.EncodeToString(b[:]),
			"iat": off("iat", 0), "nbf": off("iat", 0), "exp": off("exp", 5*time.Minute),
		}
		for _, c := range []string{"iss", "jti", "repository", "ref", "environment", "workflow", "run_id", "actor"} {
			if v := q.Get(c); v != "" {
				claims[c] = v
			}
		}
		claims["sub"] = fmt.Sprintf("repo:%s:ref:%s", q.Get("repository"), q.Get("ref"))
		is.mu.Lock()
		key := is.keys[len(is.keys)-1]
		is.mu.Unlock()
		if q.Get("kid") == "unknown" {
			key = forger
		}
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key.Key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", key.KeyID))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		raw, err := jwt.Signed(s).Claims(claims).Serialize()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/jwt")
		fmt.Fprint(w, raw)
	})
	fmt.Fprintf(os.Stdout, "listening %s\n", is.url)
	log.Fatal(http.Serve(ln, mux))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
