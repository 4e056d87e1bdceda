// Package agent is sshward's host SSH server: it proves the host's identity
// with a CA-signed host certificate, admits only user certificates of its
// tier, runs sessions as the mapped local user and records every session
// channel to asciicast v2 in a local spool (package recorder).
//
// # Happy path
//
//	ca, _ := client.New(client.Config{URL: caURL, Fingerprint: fp})
//	srv, err := agent.New(agent.Config{
//		Tier: "production", DataDir: "/var/lib/sshward-agent", CA: ca,
//		JoinToken: token, // first start only; later starts need none
//		Logger: logger,
//	})
//	ln, _ := net.Listen("tcp", ":22")
//	err = srv.Serve(ctx, ln) // joins, renews at 2/3 of the host cert's life, polls revocations
//
// Serve keeps everything in DataDir (0700, files 0600): the ed25519 host
// key, the host certificate (presented as the host key, so that `ssh` with
// only an `@cert-authority` known_hosts line verifies the host), the user-CA
// keys the tier trusts, the cached revocation list, the serials of spent
// single-use certificates, and the spool.
//
// # Admission
//
// Only user certificates (OpenSSH PROTOCOL.certkeys) signed by a trusted
// user CA are admitted; plain keys and passwords never. On top of
// x/crypto/ssh's CertChecker, which is kept as the last gate, the agent
// refuses: a certificate with no principals (CertChecker would accept it for
// any user), a host certificate, a login name not among the principals, a
// time outside the validity window (MaxClockSkew early, never late), unknown
// critical options, a source-address mismatch, a revoked serial or key id,
// a host not among the certificate's target hosts (hosts@sshward), and a
// spent single-use serial. A single-use certificate is claimed at the CA
// before its session starts (requestused.go): one claim wins in the whole
// fleet, and without the CA's answer it is refused (fail closed). It also refuses a certificate that claims
// more time than its tier allows: never expiring, valid since 1970, or a
// window longer than the tier's max_ttl plus MaxBackdate, where the CA sends
// each trusted user-CA key's max_ttl with the host certificate and the agent
// caches it in DataDir (limits.go). Each refusal is logged and audited with
// its reason; the client sees one short banner that reveals nothing. Until
// the CA signature verifies, only fingerprints are logged, never what the
// certificate says.
//
// # Before authentication
//
// Unauthenticated connections are limited as sshd limits them
// (preauth.go): per source (MaxStartupsPerSource), in all with random early
// drop (MaxStartups), and in time (BannerTimeout for the client's version
// line, HandshakeTimeout until authenticated).
//
// force-command and every permit-* extension are enforced here: pty-req,
// direct-tcpip and tcpip-forward (RFC 4254 section 7), auth-agent-req
// (OpenSSH PROTOCOL section 2.2, forwarded when permitted), user rc.
// X11 is always refused. The sshward extensions (ca/api.Ext*) carry the
// tier's recording settings; the agent's TierSettings fill in when absent.
//
// # Sessions and recording
//
// pty-req, env (TERM, LANG, LC_* only), shell, exec, subsystem sftp,
// window-change, signal, break (RFC 4335), exit-status and exit-signal
// (RFC 4254 section 6). Every session channel is recorded: output of
// terminals and of commands (stdout and stderr), input when the tier says
// so, each window-change, and markers for start, end and SFTP operations.
// When recording fails the tier decides (FailClosed: refuse and end
// sessions with a message; FailOpen: go on and raise an alert). An open
// tier's unrecorded session reaches someone (unrecorded.go): the user reads
// "sshward: this session is NOT being recorded: <reason>" on stderr, a
// report (ca/api.UnrecordedSession) is queued durably in DataDir/unrecorded
// and delivered, with the host certificate, to the CA's audit log and the
// playback server's (type session.unrecorded), retried every
// Config.UnrecordedRetry across restarts until each answered, and
// `sshward-agent status` counts and lists them.
//
// A session ends with a message when its certificate expires or is revoked,
// where the tier ends sessions on expiry: the session's context is
// cancelled with ErrCertExpired or ErrCertRevoked as its cause.
//
// # Exit statuses of sessions the agent ends
//
// A session the agent ends gets a message on its terminal (or stderr
// without one) and then an exit-status (RFC 4254 section 6.10), never an
// exit-signal: `ssh` exits with that status instead of 255, which it uses
// for its own errors and lost connections. The statuses sit above every
// 128+signal status a shell reports:
//
//	250 ExitCertExpired      certificate expired: `sshward cert`, reconnect
//	251 ExitCertRevoked      certificate revoked
//	252 ExitRecordingFailed  the tier fails closed and recording failed
//	                         (also for a session refused at its start)
//	253 ExitAgentStopped     the host agent stopped (SIGTERM/SIGINT) or
//	                         restarts (SIGHUP): reconnect later
//	  1 ExitRefused          the session could not be set up on this host
//
// A stop or restart cuts sessions that did not end by themselves: their
// recordings are finished, digested and shipped like any other, but say
// complete=false with the reason ("agent stopped", "agent restarted") in
// their metadata (incomplete, end_reason). Cancel Serve's context with
// ErrRestarting as its cause for a restart (sshward-agent does on SIGHUP,
// then executes itself again).
package agent
