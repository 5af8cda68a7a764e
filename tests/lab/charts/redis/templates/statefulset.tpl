{{- $fullname := include "redis.fullname" . -}}
{{- $registry := default .Values.image.registry .Values.global.imageRegistry -}}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ $fullname }}-master
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "redis.labels" . | nindent 4 }}
    app.kubernetes.io/component: master
spec:
  replicas: 1
  serviceName: {{ $fullname }}-headless
  selector:
    matchLabels:
      {{- include "redis.selector" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "redis.labels" . | nindent 8 }}
        app.kubernetes.io/component: master
      annotations:
        checksum/configmap: {{ include (print $.Template.BasePath "/configmap.tpl") . | sha256sum }}
    spec:
      securityContext:
        fsGroup: 1001
      containers:
        - name: redis
          image: {{ printf "%s/%s:%s" $registry .Values.image.repository .Values.image.tag }}
          securityContext:
            runAsUser: 1001
            runAsNonRoot: true
          command: ["redis-server"]
          {{- $certs := "/opt/bitnami/redis/certs" }}
          args: ["/opt/bitnami/redis/mounted-etc/redis.conf", "--dir", "{{ .Values.master.persistence.path }}",
                 "--requirepass", "$(REDIS_PASSWORD)"
                 {{- if .Values.tls.enabled -}}
                 , "--port", "0", "--tls-port", "6379",
                 "--tls-cert-file", "{{ $certs }}/{{ .Values.tls.certFilename }}",
                 "--tls-key-file", "{{ $certs }}/{{ .Values.tls.certKeyFilename }}",
                 "--tls-ca-cert-file", "{{ $certs }}/{{ .Values.tls.certCAFilename }}",
                 "--tls-auth-clients", "{{ ternary "yes" "no" .Values.tls.authClients }}"
                 {{- end -}}
                 ]
          env:
            {{- if .Values.auth.enabled }}
            - name: REDIS_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ .Values.auth.existingSecret }}
                  key: {{ .Values.auth.existingSecretPasswordKey }}
            {{- end }}
          ports:
            - name: redis
              containerPort: 6379
          readinessProbe:
            exec:
              {{- if .Values.tls.enabled }}
              command: ["sh", "-c", "REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli --tls --cacert {{ $certs }}/{{ .Values.tls.certCAFilename }} -h localhost ping | grep -q PONG"]
              {{- else }}
              command: ["sh", "-c", "REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli ping | grep -q PONG"]
              {{- end }}
          {{- with .Values.master.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: config
              mountPath: /opt/bitnami/redis/mounted-etc
            - name: redis-data
              mountPath: {{ .Values.master.persistence.path }}
            {{- if .Values.tls.enabled }}
            - name: redis-certificates
              mountPath: {{ $certs }}
              readOnly: true
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ $fullname }}-configuration
        {{- if .Values.tls.enabled }}
        - name: redis-certificates
          secret:
            secretName: {{ .Values.tls.existingSecret }}
            defaultMode: 0640
        {{- end }}
        {{- if not .Values.master.persistence.enabled }}
        - name: redis-data
          emptyDir: {}
        {{- end }}
  {{- if .Values.master.persistence.enabled }}
  volumeClaimTemplates:
    - metadata:
        name: redis-data
        labels:
          {{- include "redis.selector" . | nindent 10 }}
      spec:
        accessModes: ["ReadWriteOnce"]
        {{- if .Values.master.persistence.storageClass }}
        storageClassName: {{ .Values.master.persistence.storageClass }}
        {{- end }}
        resources:
          requests:
            storage: {{ .Values.master.persistence.size | quote }}
  {{- end }}
