{{- if ne .Values.architecture "standalone" }}
{{- fail "the lab's Redis chart stand-in only supports architecture=standalone" }}
{{- end }}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) }}
{{- fail "the lab's Redis chart stand-in needs auth.existingSecret" }}
{{- end }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "redis.fullname" . }}-configuration
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "redis.labels" . | nindent 4 }}
data:
  redis.conf: |-
    {{- .Values.commonConfiguration | nindent 4 }}
    {{- range .Values.master.disableCommands }}
    rename-command {{ . }} ""
    {{- end }}
