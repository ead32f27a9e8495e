package docker

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
)

// handleState is the driver-specific part of a Handle: enough to find the
// container again and to go on with its logs and time limit.
type handleState struct {
	ContainerID   string        `json:"container_id"`
	ContainerName string        `json:"container_name"`
	TaskName      string        `json:"task_name"`
	TimeLimit     time.Duration `json:"time_limit,omitempty"`
	KillTimeout   time.Duration `json:"kill_timeout,omitempty"`
	Logs          logConfig     `json:"logs"`
}

func encodeHandle(taskID string, startedAt time.Time, st *handleState) (*driver.Handle, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode handle: %w", err)
	}
	return &driver.Handle{Driver: caravan.DriverDocker, TaskID: taskID, StartedAt: startedAt, State: b}, nil
}

// decodeHandle checks a persisted handle. Errors match caravan.ErrInvalid.
func decodeHandle(h *driver.Handle) (*handleState, error) {
	if h == nil {
		return nil, fmt.Errorf("no handle: %w", caravan.ErrInvalid)
	}
	if h.Driver != caravan.DriverDocker {
		return nil, fmt.Errorf("handle of driver %q given to the docker driver: %w", h.Driver, caravan.ErrInvalid)
	}
	if h.TaskID == "" {
		return nil, fmt.Errorf("handle without a task id: %w", caravan.ErrInvalid)
	}
	var st handleState
	if err := json.Unmarshal(h.State, &st); err != nil {
		return nil, fmt.Errorf("decode handle of task %s: %v: %w", h.TaskID, err, caravan.ErrInvalid)
	}
	if st.ContainerID == "" || st.TaskName == "" || st.Logs.Dir == "" {
		return nil, fmt.Errorf("handle of task %s lacks the container id, task name or log dir: %w", h.TaskID, caravan.ErrInvalid)
	}
	if st.TimeLimit < 0 || st.KillTimeout < 0 || st.Logs.MaxFileSize <= 0 || st.Logs.MaxFiles <= 0 {
		return nil, fmt.Errorf("handle of task %s has negative limits: %w", h.TaskID, caravan.ErrInvalid)
	}
	return &st, nil
}
