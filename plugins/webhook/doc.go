// Package webhook is the notifier plugin sshward ships: it POSTs each
// audit event as JSON to a URL, signed so that the receiver can tell it
// came from this CA and was not altered or replayed.
//
// The request:
//
//	POST <url>
//	Content-Type: application/json
//	X-Sshward-Event: <event type>          e.g. "cert.issue"
//	X-Sshward-Seq: <event seq>             the audit log's sequence number
//	X-Sshward-Timestamp: <unix seconds>    when this attempt was signed
//	X-Sshward-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
//
//	{"seq":42,"time":"…","type":"cert.issue","actor":"alice",…,"prev_hash":"…","hash":"…"}
//
// The body is the store.AuditEvent JSON, the same document the CA's audit
// log holds, hash-chain fields included (a receiver can follow the chain).
// A receiver checks the signature with Verify (constant time), rejects
// timestamps outside its tolerance (replay), and dedupes on X-Sshward-Seq:
// delivery is at least once, so the same event may arrive twice (after a
// retry whose answer was lost, or a plugin or CA restart), always in Seq
// order.
//
// Delivery: a 2xx answer is success. Network errors, 408, 429 and 5xx are
// retried within one Notify call (Config.Attempts, backoff with jitter);
// anything else (4xx, a redirect) fails the call at once. Either way the
// CA's dispatcher (ca/notify) offers the same event again later, so nothing
// is skipped. Errors never contain the URL's path or query, which for many
// services is the credential.
//
// As a plugin (cmd/sshward-plugin-webhook) the configuration comes from
// flags or environment, see ConfigFromArgs:
//
//	sshward-plugin-webhook --url https://hooks.example.com/sshward --secret-file /etc/sshward/webhook.secret
package webhook
