// Grafana's own dashboard types (@grafana/schema), narrowed where Grafana leaves a field open so
// that the check sees more: panel targets and annotation queries are Prometheus queries.
import type { AnnotationQuery, Dashboard, DataQuery, Panel, RowPanel } from '@grafana/schema';

/** A JSON value of type T: a string enum may be written as its string value, as JSON does. */
export type Json<T> = T extends string
  ? T | `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

/**
 * A Prometheus query as Grafana's Prometheus data source stores it (the plugin's own query type
 * is not in @grafana/schema, so its fields the dashboards use are declared here).
 */
export interface PromQuery extends DataQuery {
  expr: string;
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  editorMode?: 'code' | 'builder';
  interval?: string;
  exemplar?: boolean;
}

/** A Prometheus annotation: the query in `target`, and the data source's display fields. */
export type PromAnnotation = AnnotationQuery<PromQuery> & {
  titleFormat?: string;
  textFormat?: string;
  tagKeys?: string;
  useValueForTime?: boolean;
  step?: string;
};

export type GatewayPanel = Omit<Panel, 'targets'> & { targets?: PromQuery[] };

export type GatewayDashboard = Omit<Dashboard, 'annotations' | 'panels'> & {
  annotations?: { list?: Array<PromAnnotation | AnnotationQuery> };
  panels?: Array<GatewayPanel | (Omit<RowPanel, 'panels'> & { panels: GatewayPanel[] })>;
};
