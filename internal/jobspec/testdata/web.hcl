# A service with every kind of block.
job "web" {
  name        = "web service"
  type        = "service"
  priority    = 60
  account     = "team-a"
  node_pool   = "default"
  datacenters = ["dc1", "dc2"]
  algorithm   = "spread"
  meta = {
    owner = "ops"
  }

  constraint {
    attribute = "${attr.os}"
    operator  = "="
    value     = "linux"
  }

  spread {
    attribute = "${meta.rack}"
    weight    = 50
  }

  update {
    max_parallel = 2
  }

  group "web" {
    count = 3

    restart {
      attempts = 2
      delay    = "5s"
      interval = "1m"
      mode     = "fail"
    }

    reschedule {
      attempts       = 3
      interval       = "1h"
      delay          = "30s"
      delay_function = "exponential"
      max_delay      = "10m"
    }

    task "server" {
      driver = "exec"
      config {
        command = "/bin/sleep"
        args    = ["1000"]
      }
      resources {
        cpu    = 200
        memory = "256M"
        port "http" {
          to = 8080
        }
        port "admin" {
          value = 9000
        }
      }
      env {
        FOO = "bar"
      }
      time_limit   = "1h"
      kill_timeout = "10s"
      stdout       = "/var/log/web-%j.out"
    }

    task "sidecar" {
      config {
        script = <<-EOT
          #!/bin/sh
          echo "home is ${HOME}, literal $${x}"
        EOT
      }
      resources {
        cores  = 1
        memory = 64
      }
      constraint {
        attribute = "${attr.cpu.arch}"
        value     = "amd64"
      }
    }
  }
}
