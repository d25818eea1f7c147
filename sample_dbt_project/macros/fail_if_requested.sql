{#-
  Makes the calling model fail at run time (a database error, as a real bug would) when the var
  `fail_model` names it: `dbt build --vars '{fail_model: orders}'`. dbt then reports the model as
  `error` and skips everything downstream of it, which is what hexdbt's tests need to plan from.
  Naming a unit test (`fail_model: customers_region_from_country`) fails that unit test instead
  (there `model` is the unit test), and dbt skips the model it tests.
-#}
{% macro fail_if_requested() -%}
  {%- if var('fail_model', none) == model.name -%}
    error('failing on purpose: fail_model={{ model.name }}') is null
  {%- else -%}
    true
  {%- endif -%}
{%- endmacro %}
