variable "name" {
  type        = string
  description = "Name prefix of every resource."
}
