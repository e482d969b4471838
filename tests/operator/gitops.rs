//! GitOps integration: Helm chart, kstatus, Argo CD health.
