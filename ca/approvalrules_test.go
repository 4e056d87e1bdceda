package ca_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/client"
)

// rulesPolicy: staging is self-service in Berlin business hours, else one
// approval; production needs 0 approvals for the read-only login, 1 for a
// change (the tier default), 2 from another team than the requester's for
// root.
const rulesPolicy = `tiers:
  staging:
    ttl: 30m
    approvals: 1
    approvers: [staging-leads]
    principals: {engineers: [deploy]}
    approval_rules:
      - name: business-hours
        window: {days: mon-fri, from: "09:00", to: "18:00", time_zone: Europe/Berlin}
        approvals: 0
  production:
    ttl: 15m
    approvals: 1
    approvers: [sre-leads]
    principals: {sre: [viewer, deploy, root]}
    approval_rules:
      - {name: read-only, principals: [viewer], approvals: 0}
      - {name: destructive, principals: [root], approvals: 2, separate_teams: [team-billing, team-db, team-sre]}
`

type rulesWorld struct {
	ca    *catest.CA
	clock *clock
	users map[string]*client.Client
	dir   string
	n     int
}

// newRulesWorld starts a real CA (HTTPS, store) whose clock is next
// Monday 10:00 in Berlin, whatever today is, and logs the cast in.
func newRulesWorld(t *testing.T) *rulesWorld {
	t.Helper()
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	w := &rulesWorld{clock: &clock{}, users: map[string]*client.Client{}, dir: t.TempDir()}
	now := time.Now().In(berlin)
	days := (int(time.Monday) - int(now.Weekday()) + 7) % 7
	if days == 0 {
		days = 7
	}
	y, m, d := now.AddDate(0, 0, days).Date()
	w.clock.Advance(time.Until(time.Date(y, m, d, 10, 0, 0, 0, berlin)))
	w.ca = catest.New(t, catest.Options{Policy: []byte(rulesPolicy), Now: w.clock.Now})
	for name, groups := range map[string][]string{
		"rita":  {"sre", "team-billing"},       // requester
		"bill":  {"sre-leads", "team-billing"}, // approver in the requester's team
		"dora":  {"sre-leads", "team-db"},      // approvers in other teams
		"sven":  {"sre-leads", "team-sre"},     //
		"lena":  {"sre-leads"},                 // approver in no team
		"erin":  {"engineers"},                 // staging user
		"stan":  {"staging-leads"},             // staging approver
		"tommy": {"team-db"},                   // a team, but not an approver
	} {
		w.ca.AddUser(t, name, pw, groups, false)
		w.users[name] = w.ca.Client(t, w.ca.Login(t, name, pw, ""))
	}
	return w
}

func (w *rulesWorld) cert(t *testing.T, who string, req api.CertRequest) (*ssh.Certificate, error) {
	t.Helper()
	w.n++
	_, pub := keyPair(t, w.dir, fmt.Sprintf("%s-%d", who, w.n))
	req.PublicKey = pub
	resp, err := w.users[who].Cert(context.Background(), req)
	if err != nil {
		return nil, err
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	return pk.(*ssh.Certificate), nil
}

// TestApprovalRulesRealCA: each approval rule row against the real CA:
// read-only self-service, one approval for a change, two distinct
// approvers from other teams for root (separation of duties; the same
// approver twice counts once; the requester never), and a business-hours
// window on an injected clock.
func TestApprovalRulesRealCA(t *testing.T) {
	w := newRulesWorld(t)
	ctx := context.Background()
	prod := func(ps ...string) api.CertRequest { return api.CertRequest{Tier: "production", Principals: ps} }

	t.Run("read-only: no request", func(t *testing.T) {
		c, err := w.cert(t, "rita", prod("viewer"))
		if err != nil || len(c.ValidPrincipals) != 1 || c.ValidPrincipals[0] != "viewer" {
			t.Fatalf("read-only certificate: %v %v", err, c)
		}
		_, err = w.users["rita"].CreateRequest(ctx, api.CreateRequest{Tier: "production", Reason: "look", Principals: []string{"viewer"}})
		wantRefusal(t, err, api.CodeBadRequest, `approval rule "read-only" of tier production needs no approval`)
	})
	t.Run("change: one approval", func(t *testing.T) {
		_, err := w.cert(t, "rita", prod("deploy"))
		wantRefusal(t, err, api.CodeForbidden, "approved by 1 of sre-leads (the tier default)")
		r, err := w.users["rita"].CreateRequest(ctx, api.CreateRequest{Tier: "production", Reason: "CHG-1 deploy", Principals: []string{"deploy"},
			Hosts: []string{"db1"}, Labels: map[string]string{"app": "billing"}})
		if err != nil {
			t.Fatal(err)
		}
		if r.ApprovalsNeeded != 1 || r.ApprovalRule != "tier default" || r.Scope != "hosts db1; labels app=billing" {
			t.Fatalf("request %+v", r)
		}
		// Approvers see the scope.
		seen, err := w.users["bill"].GetRequest(ctx, r.ID)
		if err != nil || seen.Scope != "hosts db1; labels app=billing" || seen.Labels["app"] != "billing" || !seen.CanApprove {
			t.Fatalf("approver's view: %v %+v", err, seen)
		}
		if _, err := w.users["bill"].ApproveRequest(ctx, r.ID, "ok"); err != nil { // same team is fine for a change
			t.Fatal(err)
		}
		// The request's scope goes into the certificate; another is refused.
		_, err = w.cert(t, "rita", api.CertRequest{Tier: "production", RequestID: r.ID, Labels: map[string]string{"app": "db"}})
		wantRefusal(t, err, api.CodeBadRequest, "was approved for hosts db1; labels app=billing, not labels app=db")
		c, err := w.cert(t, "rita", api.CertRequest{Tier: "production", RequestID: r.ID})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.CriticalOptions[api.CritScope]; got != "host=db1,label=app:billing" {
			t.Fatalf("certificate scope %q", got)
		}
	})
	t.Run("destructive: two distinct approvers from other teams", func(t *testing.T) {
		_, err := w.cert(t, "rita", prod("root"))
		wantRefusal(t, err, api.CodeForbidden, `approved by 2 of sre-leads (approval rule "destructive")`)
		r, err := w.users["rita"].CreateRequest(ctx, api.CreateRequest{Tier: "production", Reason: "INC-9 drop table", Principals: []string{"root"}})
		if err != nil {
			t.Fatal(err)
		}
		if r.ApprovalsNeeded != 2 || r.ApprovalRule != "destructive" || strings.Join(r.SeparateTeams, ",") != "team-billing,team-db,team-sre" {
			t.Fatalf("request %+v", r)
		}
		rows := []struct {
			who, code, say string
		}{
			{"bill", api.CodeForbidden, "you are both in team-billing (separation of duties)"},
			{"lena", api.CodeForbidden, "needs an approver from one of the teams team-billing, team-db, team-sre"},
			{"tommy", api.CodeForbidden, "approving tier production requests needs membership in sre-leads"},
			{"rita", api.CodeForbidden, "you cannot approve your own request"},
			{"dora", "", ""},
			{"dora", api.CodeRequestClosed, "each person counts once"},
		}
		for _, row := range rows {
			got, err := w.users[row.who].ApproveRequest(ctx, r.ID, "looked at it")
			if row.code == "" {
				if err != nil || got.State != api.StatePending || len(got.Approvals) != 1 {
					t.Fatalf("%s: %v %+v", row.who, err, got)
				}
				continue
			}
			wantRefusal(t, err, row.code, row.say)
		}
		if got, _ := w.users["rita"].GetRequest(ctx, r.ID); got.State != api.StatePending || len(got.Approvals) != 1 {
			t.Fatalf("after refused votes: %s with %d approvals, want pending with 1", got.State, len(got.Approvals))
		}
		_, err = w.cert(t, "rita", api.CertRequest{Tier: "production", RequestID: r.ID})
		wantRefusal(t, err, api.CodeForbidden, "has 1 of 2 approvals")
		if _, err := w.users["sven"].ApproveRequest(ctx, r.ID, "second pair of eyes"); err != nil {
			t.Fatal(err)
		}
		c, err := w.cert(t, "rita", api.CertRequest{Tier: "production", RequestID: r.ID})
		if err != nil || strings.Join(c.ValidPrincipals, ",") != "root" || c.Extensions[api.ExtApprovers] != "dora,sven" {
			t.Fatalf("certificate after two approvals: %v %+v", err, c)
		}
	})
	t.Run("window on an injected clock", func(t *testing.T) {
		// Monday 10:00 Berlin: inside business hours, self-service.
		if _, err := w.cert(t, "erin", api.CertRequest{Tier: "staging"}); err != nil {
			t.Fatalf("inside the window: %v", err)
		}
		_, err := w.users["erin"].CreateRequest(ctx, api.CreateRequest{Tier: "staging", Reason: "x"})
		wantRefusal(t, err, api.CodeBadRequest, `approval rule "business-hours" of tier staging needs no approval`)
		// Monday 19:00 Berlin: outside, one approval.
		w.clock.Advance(9 * time.Hour)
		_, err = w.cert(t, "erin", api.CertRequest{Tier: "staging"})
		wantRefusal(t, err, api.CodeForbidden, "approved by 1 of staging-leads (the tier default)")
		r, err := w.users["erin"].CreateRequest(ctx, api.CreateRequest{Tier: "staging", Reason: "hotfix after hours"})
		if err != nil || r.ApprovalsNeeded != 1 {
			t.Fatalf("request outside the window: %v %+v", err, r)
		}
		if _, err := w.users["stan"].ApproveRequest(ctx, r.ID, "ok"); err != nil {
			t.Fatal(err)
		}
		if _, err := w.cert(t, "erin", api.CertRequest{Tier: "staging", RequestID: r.ID}); err != nil {
			t.Fatalf("approved outside the window: %v", err)
		}
	})
}
