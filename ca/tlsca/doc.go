// Package tlsca is sshward's internal X.509 root and the TLS certificates it
// mints, so the CA and playback servers speak HTTPS without a public CA.
//
// At `sshward-ca init` the root is made once; its key is an encrypted
// ECDSA P-256 softkms key (package keys), its certificate DIR/root.crt:
//
//	root, err := tlsca.CreateRoot(ctx, dir, pass, "sshward root", now)
//	fmt.Println("fingerprint:", root.Fingerprint()) // what clients pin
//
// At `serve` the server keeps an in-memory leaf and renews it by itself:
//
//	root, err := tlsca.LoadRoot(ctx, dir, pass)
//	cfg, err := root.ServerTLSConfig([]string{"ca.example.com", "127.0.0.1"}, 24*time.Hour, time.Now)
//	srv := &http.Server{TLSConfig: cfg}
//	srv.ServeTLS(ln, "", "")
//
// A client bootstraps from the root fingerprint, like `step ca bootstrap`:
// never trust on first use. The server sends leaf + root; the client accepts
// the root only if its SHA-256 equals the pin, then verifies the leaf against
// it as usual (hostname, validity, serverAuth), saves the root, and from then
// on uses ClientConfigFromPEM:
//
//	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsca.PinnedClientConfigFor(fp, "ca.example.com")}}
//	resp, err := client.Get("https://ca.example.com/healthz")
//	rootCert, err := tlsca.PinnedRoot(*resp.TLS, fp)
//	os.WriteFile(home+"/root.pem", tlsca.EncodePEM(rootCert), 0o644)
//
// The fingerprint is the lowercase hex SHA-256 of the root certificate's DER,
// the same value `step certificate fingerprint root.crt` and
// `openssl x509 -noout -fingerprint -sha256` (without colons) print.
package tlsca
