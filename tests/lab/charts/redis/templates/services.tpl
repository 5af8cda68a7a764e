apiVersion: v1
kind: Service
metadata:
  name: {{ include "redis.fullname" . }}-headless
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "redis.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  clusterIP: None
  selector:
    {{- include "redis.selector" . | nindent 4 }}
  ports:
    - name: tcp-redis
      port: 6379
      targetPort: redis
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "redis.fullname" . }}-master
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "redis.labels" . | nindent 4 }}
    app.kubernetes.io/component: master
spec:
  type: {{ .Values.master.service.type }}
  selector:
    {{- include "redis.selector" . | nindent 4 }}
  ports:
    - name: tcp-redis
      port: 6379
      targetPort: redis
      {{- if and (eq .Values.master.service.type "NodePort") .Values.master.service.nodePorts.redis }}
      nodePort: {{ .Values.master.service.nodePorts.redis }}
      {{- end }}
