package httpapi

import "net/http"

// permission is what a caller must hold to use a route. ACL tokens are not
// enforced yet (they come with the ACL work, and stay off in dev mode);
// every route already names its permission so that enforcing them is a
// change to authorize alone.
type permission string

// Permissions.
const (
	// permNone: anyone (health and status probes).
	permNone permission = "none"
	// permRead: read jobs, allocations, evaluations, nodes, events, logs.
	permRead permission = "read"
	// permSubmit: register, stop, evaluate and restart jobs; stop
	// allocations.
	permSubmit permission = "submit"
	// permNodeWrite: drain, eligibility and removal of nodes.
	permNodeWrite permission = "node:write"
	// permAgent: agent calls, authenticated by the node secret.
	permAgent permission = "agent"
	// permOperator: cluster membership, garbage collection, metrics.
	permOperator permission = "operator"
)

// route is one entry of the routing table.
type route struct {
	// pattern is a Go 1.22 ServeMux pattern: "METHOD /path/{wildcard}".
	pattern string
	perm    permission
	handler http.Handler
	// local marks a write that this server handles itself even when it
	// is not the leader. Every other write (any method but GET and HEAD)
	// is forwarded to the leader.
	local bool
}

func rt(pattern string, perm permission, h http.Handler) route {
	return route{pattern: pattern, perm: perm, handler: h}
}

// routes is the one list of every route the server serves.
func (a *API) routes() []route {
	return []route{
		// Jobs.
		rt("GET /v1/jobs", permRead, a.handleJobList()),
		rt("POST /v1/jobs", permSubmit, a.handleJobRegister()),
		rt("GET /v1/job/{id}", permRead, a.handleJobRead()),
		rt("POST /v1/job/{id}", permSubmit, a.handleJobRegister()),
		rt("PUT /v1/job/{id}", permSubmit, a.handleJobRegister()),
		rt("DELETE /v1/job/{id}", permSubmit, a.handleJobStop()),
		rt("GET /v1/job/{id}/versions", permRead, a.handleJobVersions()),
		rt("GET /v1/job/{id}/allocations", permRead, a.handleJobAllocations()),
		rt("GET /v1/job/{id}/evaluations", permRead, a.handleJobEvaluations()),
		rt("GET /v1/job/{id}/summary", permRead, a.handleJobSummary()),
		rt("POST /v1/job/{id}/evaluate", permSubmit, a.handleJobEvaluate()),
		rt("POST /v1/job/{id}/restart", permSubmit, a.handleJobRestart()),

		// Allocations and evaluations.
		rt("GET /v1/allocations", permRead, a.handleAllocList()),
		rt("GET /v1/allocation/{id}", permRead, a.handleAllocRead()),
		rt("POST /v1/allocation/{id}/stop", permSubmit, a.handleAllocStop()),
		rt("GET /v1/evaluations", permRead, a.handleEvalList()),
		rt("GET /v1/evaluation/{id}", permRead, a.handleEvalRead()),
		rt("GET /v1/evaluation/{id}/allocations", permRead, a.handleEvalAllocations()),

		// Nodes. Agents call register, heartbeat and allocations.
		rt("GET /v1/nodes", permRead, a.handleNodeList()),
		rt("GET /v1/node/{id}", permRead, a.handleNodeRead()),
		rt("POST /v1/node/register", permAgent, a.handleNodeRegister()),
		rt("POST /v1/node/{id}/heartbeat", permAgent, a.handleNodeHeartbeat()),
		rt("GET /v1/node/{id}/allocations", permAgent, a.handleNodeAllocations()),
		rt("POST /v1/node/{id}/allocations", permAgent, a.handleNodeUpdateAllocs()),
		rt("POST /v1/node/{id}/drain", permNodeWrite, a.handleNodeDrain()),
		rt("POST /v1/node/{id}/eligibility", permNodeWrite, a.handleNodeEligibility()),
		rt("DELETE /v1/node/{id}", permNodeWrite, a.handleNodeDeregister()),

		// Events and logs.
		rt("GET /v1/event/stream", permRead, a.handleEventStream()),
		rt("GET /v1/client/allocation/{id}/logs", permRead, a.handleAllocLogs()),

		// Status and operations.
		rt("GET /v1/health", permNone, a.handleHealth()),
		rt("GET /v1/status/leader", permNone, a.handleStatusLeader()),
		rt("GET /v1/status/peers", permNone, a.handleStatusPeers()),
		rt("GET /v1/operator/raft/configuration", permOperator, a.handleRaftConfiguration()),
		rt("POST /v1/operator/raft/join", permOperator, a.handleRaftJoin()),
		rt("DELETE /v1/operator/raft/peer/{id}", permOperator, a.handleRaftRemovePeer()),
		rt("POST /v1/system/gc", permOperator, a.handleSystemGC()),
		rt("GET /v1/metrics", permOperator, a.handleMetrics()),

		// The myNomad-style dialect (mynomad.go).
		rt("POST /register", permAgent, a.handleNomadRegister()),
		rt("POST /heartbeat", permAgent, a.handleNomadHeartbeat()),
		rt("GET /jobs", permRead, a.handleJobList()),
		rt("POST /jobs", permSubmit, a.handleNomadJobRegister()),
		rt("GET /jobs/{job_id}", permRead, a.handleNomadJobRead()),
		rt("PUT /jobs/{job_id}", permSubmit, a.handleNomadJobRegister()),
		rt("DELETE /jobs/{job_id}", permSubmit, a.handleNomadJobStop()),
		rt("POST /jobs/{job_id}/delete", permSubmit, a.handleNomadJobStop()),
		rt("POST /jobs/{job_id}/restart", permSubmit, a.handleNomadJobRestart()),
		rt("GET /nodes", permRead, a.handleNodeList()),
	}
}
