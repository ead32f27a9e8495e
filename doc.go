// Package caravan holds the domain of the caravan workload scheduler: jobs,
// task groups, tasks, resources, nodes, allocations, evaluations and plans,
// their defaults and validation, and the sentinel errors every layer matches
// with errors.Is.
//
// The package imports only the standard library. Everything that touches the
// network, the disk, Raft, Docker or cgroups lives under internal/ and speaks
// in these types, so the server, the agent, the CLI, the Go client and the web
// UI all share one set of wire types (snake_case JSON).
package caravan
