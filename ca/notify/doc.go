// Package notify delivers the CA's audit events to notifiers (DESIGN.md
// "Plugins": a notifier gets every audit event; unavailable → queued and
// retried; issuance goes on; the audit log notes the failure).
//
// The audit log is the queue. Every decision the CA makes is already
// appended to the hash-chained log inside the transaction that makes it,
// so the Dispatcher only has to remember, per notifier, the Seq of the
// last event it delivered: a cursor kept in the store's meta under
// CursorKey(name). A slow or dead notifier holds back nothing but its own
// cursor; a CA restart resumes where the cursor stands.
//
//	d, _ := notify.New(notify.Config{Store: db, Targets: []notify.Target{{Name: "webhook", Notifier: client}}})
//	go d.Run(ctx) // until ctx ends
//	d.Notify()    // optional nudge after appending events; otherwise Poll
//
// Guarantees, per notifier: every event, in Seq order, at least once. An
// event is retried (exponential backoff with jitter) until it is delivered
// and never skipped, so a permanently failing notifier stalls only its own
// cursor. Duplicates are possible after a crash or a delivery whose answer
// was lost: the cursor is saved after each batch, not after each event, and
// a notifier killed after acting but before answering is asked again.
// Receivers dedupe on Seq. After FailureThreshold consecutive failures
// one "notify.failure" audit event (Subject: the notifier's name) records
// it; the next streak, after a success, records another.
package notify
