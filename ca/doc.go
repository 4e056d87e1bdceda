// Package ca is the sshward certificate authority: it logs people in (local
// users with password + TOTP, or OIDC), turns an identity and a tier into a
// minute-scale OpenSSH user certificate following the tier policy, joins
// hosts with one-time tokens and renews their host certificates, revokes
// certificates (served as OpenSSH KRLs, PROTOCOL.krl) and writes every
// decision to a hash-chained audit log.
//
// The happy path:
//
//	a, _ := ca.New(ca.Config{Store: db, Policy: pol, UserCAs: signers, HostCA: hostSigner})
//	resp, _ := a.Login(ctx, api.LoginRequest{User: "alice", Password: pw, OTP: code}, "10.0.0.7")
//	sess, _ := a.Authenticate(ctx, resp.Token)
//	cert, _ := a.IssueUserCert(ctx, sess, api.CertRequest{Tier: "production", PublicKey: pub}, "10.0.0.7")
//
// Certificates follow OpenSSH PROTOCOL.certkeys: a random 64-bit serial, a
// readable KeyId ("alice@local tier=production req=- serial=…"), validity
// backdated by at most a minute for clock skew, principals from policy only.
//
// Access requests give dual control to every tier whose policy sets
// approvals (requests.go): CreateRequest, then Approve by N distinct members
// of the tier's approver groups (never the requester), then IssueUserCert
// with CertRequest.RequestID buys one certificate, which carries the
// request id, reason and approvers in …@sshward extensions:
//
//	r, _ := a.CreateRequest(ctx, olivia, api.CreateRequest{Tier: "break-glass", Reason: "INC-4711"}, addr)
//	a.Approve(ctx, ian, r.ID, api.Decision{Reason: "bridge agrees"}, addr)
//	a.Approve(ctx, ivy, r.ID, api.Decision{}, addr)
//	cert, _ := a.IssueUserCert(ctx, olivia, api.CertRequest{Tier: "break-glass", PublicKey: pub, RequestID: r.ID}, addr)
//
// Admin is the part that needs no signing keys (users, join tokens,
// revocation, audit): the sshward-ca admin verbs use it directly on the store
// when the CA is not running, and through the server's unix socket when it is.
package ca
